"""Benchmark: batched, length-bucketed openai-whisper decoding vs one utterance at a time.

Runs every configuration in one process on the same audio and prints, for each: wall time,
real-time factor, speed-up over batch size 1 on the same device and precision, how many
hypotheses equal those of batch size 1 (batching must not change transcripts), and WER when
transcripts are given. With ``--cpu-reference`` it also decodes on the CPU in float32 and
reports how many GPU hypotheses equal the CPU ones (fp16 on GPU vs the CPU reference).

    python bench/bench_asr.py --model tiny.en.pt --audio ../shared/corpora/ljspeech-32/wavs \
        --text ../shared/corpora/ljspeech-32/transcripts.tsv --device cuda --batch-sizes 1,8,32

``--model``: an openai-whisper checkpoint (.pt), an asset name or a size (see speechqe.asr).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from speechqe.asr import BackendConfig, count_edits, get_normalizer  # noqa: E402
from speechqe.asr.whisper_openai import OpenAIWhisperBackend  # noqa: E402
from speechqe.audio import read, resample  # noqa: E402


def load_audio(folder: Path, limit: int | None):
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".wav", ".flac"))
    files = files[:limit] if limit else files
    audio = []
    for f in files:
        x, sr = read(f)
        audio.append(resample(x, sr, 16000))
    return [f.stem for f in files], audio


def corpus_wer(ids, hyps, table):
    if not table:
        return None
    norm = get_normalizer("whisper-english", "en")
    edits = [count_edits(norm(table[i]), norm(h)) for i, h in zip(ids, hyps) if i in table]
    return sum(e.errors for e in edits) / sum(e.ref_len for e in edits)


def run(backend, audio, repeats: int):
    import torch

    backend.transcribe(audio[:2])  # warm-up (CUDA context, kernels)
    best, hyps = float("inf"), None
    for _ in range(repeats):
        if backend.config.device == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        hyps = backend.transcribe(audio)
        if backend.config.device == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t)
    return best, hyps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--audio", type=Path, required=True)
    ap.add_argument("--text", type=Path)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--batch-sizes", default="1,8,32")
    ap.add_argument("--beam-size", type=int, default=1)
    ap.add_argument("--limit", type=int)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--fp32", action="store_true", help="also run float32 on the device")
    ap.add_argument("--cpu-reference", action="store_true")
    args = ap.parse_args()

    ids, audio = load_audio(args.audio, args.limit)
    minutes = sum(len(a) for a in audio) / 16000 / 60
    table = {}
    if args.text:
        for line in args.text.read_text(encoding="utf-8").splitlines():
            if "\t" in line:
                k, v = line.split("\t", 1)
                table[k] = v
    print(f"{len(audio)} utterances, {minutes:.2f} min of audio; model {args.model}; "
          f"beam {args.beam_size}; threads {os.environ.get('OMP_NUM_THREADS', 'default')}")
    precisions = ["auto"] + (["float32"] if args.fp32 and args.device == "cuda" else [])
    results = {}
    for ct in precisions:
        for bs in [int(b) for b in args.batch_sizes.split(",")]:
            cfg = BackendConfig(backend="openai-whisper", model=args.model, device=args.device,
                                compute_type=ct, beam_size=args.beam_size, batch_size=bs)
            backend = OpenAIWhisperBackend(cfg)
            secs, hyps = run(backend, audio, args.repeats)
            results[(ct, bs)] = (secs, hyps, backend.model_id)
            del backend
    cpu = None
    if args.cpu_reference:
        cfg = BackendConfig(backend="openai-whisper", model=args.model, device="cpu",
                            beam_size=args.beam_size, batch_size=16)
        cpu_secs, cpu_hyps = run(OpenAIWhisperBackend(cfg), audio, 1)
        cpu = cpu_hyps
        w = corpus_wer(ids, cpu_hyps, table)
        print(f"cpu float32 batch 16: {cpu_secs:.2f} s ({minutes * 60 / cpu_secs:.1f}x real time)"
              + (f", WER {w:.2%}" if w is not None else ""))
    for (ct, bs), (secs, hyps, mid) in results.items():
        base_secs, base_hyps, _ = results[(ct, min(b for c, b in results if c == ct))]
        same = sum(a == b for a, b in zip(hyps, base_hyps))
        w = corpus_wer(ids, hyps, table)
        line = (f"{args.device} {mid.rsplit(':', 1)[-1]} batch {bs:3d}: {secs:7.2f} s "
                f"({minutes * 60 / secs:6.1f}x real time), speed-up over batch 1 "
                f"{base_secs / secs:5.2f}x, identical to batch 1: {same}/{len(hyps)}")
        if w is not None:
            line += f", WER {w:.2%}"
        if cpu is not None:
            line += f", identical to cpu fp32: {sum(a == b for a, b in zip(hyps, cpu))}/{len(hyps)}"
        print(line, flush=True)


if __name__ == "__main__":
    main()
