"""The per-file loop a user writes around the same libraries: the baseline of
``bench/bench_throughput.py`` (run by it as a subprocess; not part of speechqe).

    python bench/loop_baseline.py SYSTEMS_DIR REFS_DIR OUT.json [--text FILE] [--nightly]

For every ``SYSTEMS_DIR/<system>/<utt>.wav`` and its reference ``REFS_DIR/<utt>.wav`` (both
16 kHz): read both with soundfile; PESQ (``pesq``, wide band), STOI and ESTOI (``pystoi`` at
16 kHz), SI-SDR (the three numpy lines of its definition), WORLD Harvest + CheapTrick +
``pysptk.sp2mc`` of the reference and of the output, DTW-aligned MCD and F0 scores (the
formulas of ``speechqe.metrics.functional``, which define those metrics; any other DTW would
give other numbers), and DNSMOS (``speechmos.dnsmos.run``). With ``--nightly`` also WER
(``faster_whisper`` with the packaged Whisper tiny.en, beam 5, int8, Whisper's English
normaliser, ``jiwer``) and speaker similarity (``resemblyzer``: ``preprocess_wav`` +
``embed_utterance`` of the output and the reference, cosine). Nothing is shared between
items or systems: each reference is analysed again for every system, as such loops do.

Writes ``{"values": {"<item>|<metric>": value}, "seconds": wall}``; models are loaded before
the clock starts only in the sense that a loop loads them once, at its top (timed).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

SR = 16000


def si_sdr(ref: np.ndarray, deg: np.ndarray) -> float:
    ref = ref.astype(np.float64) - ref.mean()
    deg = deg.astype(np.float64) - deg.mean()
    target = (deg @ ref) / (ref @ ref) * ref
    return float(10 * np.log10((target @ target) / ((deg - target) @ (deg - target))))


def world(x: np.ndarray):
    import pysptk
    import pyworld as pw

    x64 = x.astype(np.float64)
    f0, t = pw.harvest(x64, SR, f0_floor=71.0, f0_ceil=800.0, frame_period=5.0)
    sp = pw.cheaptrick(x64, f0, t, SR, f0_floor=71.0,
                       fft_size=pw.get_cheaptrick_fft_size(SR, 71.0))
    return f0, pysptk.sp2mc(sp, 24, 0.41)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("systems", type=Path)
    ap.add_argument("refs", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--text", type=Path)
    ap.add_argument("--nightly", action="store_true")
    args = ap.parse_args()
    start = time.perf_counter()

    import soundfile as sf
    from pesq import pesq
    from pystoi import stoi
    from speechmos import dnsmos

    from speechqe.metrics.functional.f0 import f0_scores
    from speechqe.metrics.functional.mcd import dtw_path, mcd

    if args.nightly:
        import jiwer
        from faster_whisper import WhisperModel
        from resemblyzer import VoiceEncoder
        from resemblyzer.audio import preprocess_wav
        from whisper.normalizers import EnglishTextNormalizer

        from speechqe import assets

        asr = WhisperModel(str(assets.get("whisper-tiny.en-ct2").path()), device="cpu",
                           compute_type="int8", cpu_threads=1)
        norm = EnglishTextNormalizer()
        enc = VoiceEncoder(device="cpu", verbose=False,
                           weights_fpath=assets.get("resemblyzer-ge2e").file("pretrained.pt"))
        texts = dict(line.rstrip("\n").split("\t", 1) for line in open(args.text, encoding="utf-8")
                     if "\t" in line)

        def embed(x):
            t = preprocess_wav(x, source_sr=SR)
            x = t if t.size >= SR // 4 else x
            e = enc.embed_utterance(x.astype(np.float32))
            return e / np.linalg.norm(e)

        def clean(s):
            return " ".join(norm(s).split())

    values: dict[str, float] = {}
    for path in sorted(args.systems.glob("*/*.wav")):
        item = f"{path.parent.name}/{path.stem}"
        deg, _ = sf.read(path, dtype="float32")
        ref, _ = sf.read(args.refs / path.name, dtype="float32")
        n = min(ref.size, deg.size)
        values[f"{item}|pesq"] = float(pesq(SR, ref, deg, "wb"))
        values[f"{item}|stoi"] = float(stoi(ref[:n], deg[:n], SR))
        values[f"{item}|estoi"] = float(stoi(ref[:n], deg[:n], SR, extended=True))
        values[f"{item}|si_sdr"] = si_sdr(ref[:n], deg[:n])
        f0_r, mc_r = world(ref)
        f0_d, mc_d = world(deg)
        pairs = dtw_path(mc_r, mc_d)
        values[f"{item}|mcd"] = float(mcd(mc_r, mc_d, pairs))
        f = f0_scores(f0_r, f0_d, pairs)
        for k, v in f.values().items():
            values[f"{item}|{k}"] = float(v)
        d = dnsmos.run(deg, SR)
        for k, ours in (("sig_mos", "dnsmos_sig"), ("bak_mos", "dnsmos_bak"),
                        ("ovrl_mos", "dnsmos_ovrl"), ("p808_mos", "dnsmos_p808")):
            values[f"{item}|{ours}"] = float(d[k])
        if args.nightly:
            segs, _info = asr.transcribe(deg, language="en", task="transcribe", beam_size=5,
                                         temperature=0.0, condition_on_previous_text=False,
                                         without_timestamps=True, vad_filter=False)
            hyp = "".join(s.text for s in segs).strip()
            values[f"{item}|wer"] = float(jiwer.wer(clean(texts[path.stem]), clean(hyp)))
            values[f"{item}|speaker_sim"] = float(embed(deg) @ embed(ref))
    seconds = time.perf_counter() - start
    args.out.write_text(json.dumps({"values": values, "seconds": seconds}))


if __name__ == "__main__":
    main()
