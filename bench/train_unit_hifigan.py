"""Tokenise a small single-speaker corpus, train a unit HiFi-GAN on it, resynthesise held-out
clips and score them: the end-to-end run behind docs/benchmarks.md ("Unit HiFi-GAN").

    # CPU, ~30 min on 2 shared cores (what docs/benchmarks.md reports):
    OMP_NUM_THREADS=2 nice -n 10 python bench/train_unit_hifigan.py --minutes 30
    # GPU throughput run (a few minutes):
    python bench/train_unit_hifigan.py --device cuda --amp bf16 --workers 4 --batch-size 16 \
        --preset v1 --minutes 4 --no-score

Steps: (1) speech set from ``--corpus`` (``wavs/`` + ``transcripts.tsv``), the last
``--holdout`` clips held out; (2) features from ``--encoder`` through the shared encoder layer,
K-means codebook on the training clips; (3) frame-level units of every clip; (4) unit HiFi-GAN
training (mel-L1 per step in ``train_log.csv``, held-out full-utterance mel-L1 at each
checkpoint in ``val_log.jsonl``); (5) resynthesis of the held-out clips from their units;
(6) scores of the resynthesised clips against the originals: with the project's metrics through
the runner when they are registered, else with the libraries those metrics wrap (WER with the
packaged Whisper tiny.en through faster-whisper + jiwer, MCD with WORLD + SPTK and DTW, DNSMOS
with speechmos) — marked ``"scored_by": "bench-fallback"`` in the summary.

The last line printed is a one-line JSON summary (throughput: steps/s, batch, segment length).
Needs only torch, torchaudio, numpy, soundfile, scipy and speechqe for steps 1-5 (the encoder's
own extra for step 2: faster-whisper for ``whisper-ct2``; none for ``logmel``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "2")

import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parent.parent

#: Generator / discriminator sizes. ``v1`` is HiFi-GAN V1 as in the public LJSpeech unit
#: vocoders; ``small`` and ``tiny`` use the V3 residual blocks and narrower discriminators so
#: that a CPU can take some steps.
PRESETS = {
    "v1": dict(gen=dict(upsample_initial_channel=512, resblock="1",
                        resblock_kernel_sizes=(3, 7, 11),
                        resblock_dilation_sizes=((1, 3, 5),) * 3),
               disc=dict()),
    "small": dict(gen=dict(upsample_initial_channel=256, resblock="2",
                           resblock_kernel_sizes=(3, 5, 7),
                           resblock_dilation_sizes=((1, 2), (2, 6), (3, 12))),
                  disc=dict(mpd_channels=(8, 32, 128, 256, 256),
                            msd_channels=(32, 32, 64, 128, 256, 256, 256))),
    # HiFi-GAN V3's geometry (three upsampling stages, 256 channels, V3 blocks): 32 channels at
    # the output rate instead of tiny's 4, for about tiny's cost per step on a CPU.
    "v3": dict(gen=dict(upsample_initial_channel=256, resblock="2",
                        resblock_kernel_sizes=(3, 5, 7),
                        resblock_dilation_sizes=((1, 2), (2, 6), (3, 12))),
               ups={320: ((10, 8, 4), (20, 16, 8)), 160: ((10, 4, 4), (20, 8, 8))},
               disc=dict(mpd_channels=(4, 16, 64, 128, 128),
                         msd_channels=(16, 16, 32, 64, 128, 128, 128))),
    "tiny": dict(gen=dict(upsample_initial_channel=128, resblock="2",
                          resblock_kernel_sizes=(3, 5, 7),
                          resblock_dilation_sizes=((1, 2), (2, 6), (3, 12))),
                 disc=dict(mpd_channels=(4, 16, 64, 128, 128),
                           msd_channels=(16, 16, 32, 64, 128, 128, 128))),
}

#: Upsampling stages per hop size (16 kHz output): 50 Hz units (SSL, Whisper) and 100 Hz
#: (log-mel).
UPSAMPLING = {320: ((5, 4, 4, 2, 2), (11, 8, 8, 4, 4)), 160: ((5, 4, 4, 2), (11, 8, 8, 4))}


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    corpora = Path(os.environ.get("SPEECHQE_CORPORA", REPO.parent / "shared" / "corpora"))
    ap.add_argument("--corpus", type=Path, default=corpora / "ljspeech-32")
    ap.add_argument("--holdout", type=int, default=4)
    ap.add_argument("--encoder", default="whisper-ct2",
                    help="encoder spec: whisper-ct2, logmel, ssl:<checkpoint>, ...")
    ap.add_argument("--layer", type=int, default=None)
    ap.add_argument("--units", type=Path, default=None,
                    help="reuse a units file + its codebook (--codebook) instead of running the "
                    "encoder and k-means: the GPU run needs no encoder extra")
    ap.add_argument("--codebook", type=Path, default=None)
    ap.add_argument("--k", type=int, default=100)
    ap.add_argument("--kmeans-epochs", type=int, default=20)
    ap.add_argument("--out", type=Path, default=REPO / "out" / "unit_hifigan")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--preset", choices=sorted(PRESETS), default="tiny")
    ap.add_argument("--steps", type=int, default=100000, help="upper bound; see --minutes")
    ap.add_argument("--minutes", type=float, default=None, help="training wall-time budget")
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--segment-frames", type=int, default=28,
                    help="unit frames per training segment (28 x 320 = 8960 samples)")
    ap.add_argument("--f0-bins", type=int, default=0,
                    help="condition on quantised F0 with this many bins (0: no F0)")
    ap.add_argument("--dur-predictor", action="store_true",
                    help="train a duration predictor too (for deduplicated units)")
    ap.add_argument("--amp", choices=("none", "bf16", "fp16"), default="none")
    ap.add_argument("--workers", type=int, default=0)
    ap.add_argument("--lr", type=float, default=2e-4)
    ap.add_argument("--adv-start-step", type=int, default=0)
    ap.add_argument("--lr-decay-steps", type=int, default=0,
                    help="decay the lr by 0.999 every N steps (0: per epoch, as HiFi-GAN)")
    ap.add_argument("--log-every", type=int, default=10)
    ap.add_argument("--checkpoint-every", type=int, default=250)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--no-score", action="store_true")
    ap.add_argument("--no-cache", action="store_true")
    return ap.parse_args(argv)


def build_sets(corpus: Path, holdout: int):
    from speechqe.manifest import load_speech_set

    sset = load_speech_set(corpus / "wavs", text_file=corpus / "transcripts.tsv")
    items = sorted(sset, key=lambda it: it.id)
    train = sset.replace_items(items[:-holdout])
    held = sset.replace_items(items[-holdout:])
    return train, held


def main(argv=None) -> dict:
    a = parse_args(argv)
    import torch

    if a.threads:
        torch.set_num_threads(a.threads)
    from speechqe.vocoders.resynth import ResynthOptions, vocode_units
    from speechqe.vocoders.unit_hifigan.config import (
        DiscriminatorConfig,
        DurationPredictorConfig,
        GeneratorConfig,
        TrainConfig,
        VocoderConfig,
    )
    from speechqe.vocoders.unit_hifigan.data import SegmentDataset, Utterance
    from speechqe.vocoders.unit_hifigan.infer import UnitVocoder
    from speechqe.vocoders.unit_hifigan.losses import LogMel
    from speechqe.vocoders.unit_hifigan.train import train
    from speechqe.vocoders.units import Codebook, KMeansConfig, bitrate_report, read_units, write_units

    out = a.out
    out.mkdir(parents=True, exist_ok=True)
    t_all = time.perf_counter()
    train_set, held_set = build_sets(a.corpus, a.holdout)
    print(f"train {len(train_set)} clips, held out {len(held_set)}: "
          f"{[it.id for it in held_set]}", flush=True)

    t0 = time.perf_counter()
    if a.units:
        # 1-3 done before: units file + codebook (e.g. from the CPU run)
        if not a.codebook:
            raise SystemExit("--units needs --codebook")
        codebook = Codebook.load(a.codebook)
        header, recs = read_units(a.units)
        if header["codebook"] != codebook.fingerprint():
            raise SystemExit("the units file was not made with this codebook")
        by_id = {r.id: r for r in recs}
        train_recs = [by_id[it.id] for it in train_set if it.id in by_id]
        held_recs = [by_id[it.id] for it in held_set if it.id in by_id]
    else:
        # 1-2: features and codebook (reused when the same encoder/k already produced one)
        from speechqe.vocoders.features import load_feature_source
        from speechqe.vocoders.tokenize import encode_set, train_codebook

        src = load_feature_source(a.encoder, a.layer, device=a.device,
                                  cache_dir=str(out / "features"), use_cache=not a.no_cache)
        cb_path = out / f"codebook-k{a.k}.npz"
        if cb_path.is_file() and Codebook.load(cb_path).encoder == src.encoder_id:
            codebook = Codebook.load(cb_path)
        else:
            codebook = train_codebook(train_set, src, KMeansConfig(
                k=a.k, batch_size=4096, epochs=a.kmeans_epochs,
                device=a.device if a.device.startswith("cuda") else "cpu"))
            codebook.save(cb_path)
        # 3: units of every clip
        train_recs = encode_set(train_set, src, codebook).records
        held_recs = encode_set(held_set, src, codebook).records
        write_units(out / "units.jsonl", train_recs + held_recs, codebook, dedup=False)
    t_tok = time.perf_counter() - t0
    print(f"codebook {codebook.encoder} layer {codebook.layer} k={codebook.k} "
          f"({codebook.frame_rate:g} Hz): inertia {codebook.info.get('inertia'):.4g}, "
          f"{t_tok:.1f} s", flush=True)
    br_train = bitrate_report([r.frame_units() for r in train_recs], codebook.frame_rate,
                              codebook.k)
    br_held = bitrate_report([r.frame_units() for r in held_recs], codebook.frame_rate,
                             codebook.k)

    # 4: train
    hop = round(16000 / codebook.frame_rate)
    preset = PRESETS[a.preset]
    ups = preset.get("ups", UPSAMPLING)
    if hop not in ups:
        raise SystemExit(f"no upsampling stages for a {hop}-sample hop in preset {a.preset}")
    rates, kernels = ups[hop]
    gcfg = GeneratorConfig(num_embeddings=codebook.k, upsample_rates=rates,
                           upsample_kernel_sizes=kernels, sampling_rate=16000,
                           f0=a.f0_bins > 0, f0_quant_num_bin=a.f0_bins,
                           dur_predictor=(DurationPredictorConfig() if a.dur_predictor else None),
                           **preset["gen"])
    tcfg = TrainConfig(batch_size=a.batch_size, segment_size=a.segment_frames * hop,
                       learning_rate=a.lr, lr_decay_steps=a.lr_decay_steps, amp=a.amp,
                       workers=a.workers,
                       adv_start_step=a.adv_start_step, log_every=a.log_every,
                       checkpoint_every=a.checkpoint_every)
    vcfg = VocoderConfig(generator=gcfg, discriminator=DiscriminatorConfig(**preset["disc"]),
                         train=tcfg)
    paths = {it.id: it.path for it in train_set}
    f0_bins, quant = {}, None
    if a.f0_bins:
        from speechqe.audio import LoadedAudio
        from speechqe.vocoders.f0 import F0Quantizer, extract_f0

        hz = {r.id: extract_f0(LoadedAudio.from_file(paths[r.id]).at(16000), 16000,
                               codebook.frame_rate, r.frames) for r in train_recs}
        quant = F0Quantizer.fit(list(hz.values()), a.f0_bins)
        f0_bins = {k: quant.quantize(v) for k, v in hz.items()}
    utts = [Utterance(id=r.id, audio_path=paths[r.id], units=r.frame_units(),
                      f0=f0_bins.get(r.id)) for r in train_recs]
    ds = SegmentDataset(utts, sample_rate=16000, hop_size=hop, segment_frames=a.segment_frames)

    from speechqe.audio import LoadedAudio

    held_audio = {it.id: LoadedAudio.from_file(it.path).at(16000) for it in held_set}
    mel_fn = LogMel(vcfg.mel, 16000)

    def validate(generator, step):
        """Held-out mel-L1 on full utterances (generated from their units)."""
        dev = next(generator.parameters()).device
        losses = []
        for r in held_recs:
            u = torch.from_numpy(r.frame_units())[None].to(dev)
            f0 = None
            if quant is not None:
                hz = extract_f0(held_audio[r.id], 16000, codebook.frame_rate, r.frames)
                f0 = torch.from_numpy(quant.quantize(hz))[None].to(dev)
            y_hat = generator(u, f0=f0).float().cpu()[0, 0]
            y = torch.from_numpy(held_audio[r.id])
            n = min(y.numel(), y_hat.numel())
            losses.append(float((mel_fn(y[None, :n]) - mel_fn(y_hat[None, :n])).abs().mean()))
        return {"val_mel_l1": float(np.mean(losses))}

    meta = {"units": {"codebook": codebook.fingerprint(), "encoder": codebook.encoder,
                      "layer": codebook.layer, "k": codebook.k,
                      "frame_rate": codebook.frame_rate},
            "corpus": str(a.corpus), "holdout": [it.id for it in held_set]}
    if quant is not None:
        meta["f0_quantizer"] = quant.to_dict()
    ckpt = out / f"vocoder-{a.preset}"

    def log(row):
        print(f"step {row['step']:6d}  mel_l1 {row['mel_l1']:.4f}  loss_d {row['loss_d']:.3f}"
              f"  {row['steps_per_s']:.3f} steps/s", flush=True)

    res = train(vcfg, ds, ckpt, steps=a.steps, device=a.device, meta=meta, log=log,
                validate=validate, max_seconds=a.minutes * 60 if a.minutes else None)

    # 5: resynthesise the held-out clips
    voc = UnitVocoder.from_checkpoint(ckpt, device=a.device)
    rs = vocode_units(held_set, held_recs, codebook, voc, out / "resynth",
                      ResynthOptions(device=a.device, batch_size=4))
    summary = {
        "bench": "unit_hifigan", "encoder": codebook.encoder, "layer": codebook.layer,
        "k": codebook.k, "frame_rate": codebook.frame_rate, "preset": a.preset,
        "train_clips": len(train_set), "heldout_clips": len(held_set),
        "generator_params_M": round(sum(p.numel() for p in voc.model.parameters()) / 1e6, 3),
        "tokenizer_seconds": round(t_tok, 1),
        "bitrate_train": {k: round(v, 2) if isinstance(v, float) else v
                          for k, v in br_train.to_dict().items()},
        "bitrate_heldout": {k: round(v, 2) if isinstance(v, float) else v
                            for k, v in br_held.to_dict().items()},
        **res.summary(),
    }
    vals = [json.loads(ln) for ln in open(ckpt / "val_log.jsonl")] if (ckpt / "val_log.jsonl").is_file() else []
    summary["val_mel_l1"] = vals[-1]["val_mel_l1"] if vals else None
    if not a.no_score:
        summary["scores"] = score(rs, out, a.device)
    summary["total_seconds"] = round(time.perf_counter() - t_all, 1)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary), flush=True)
    return summary


# ------------------------------------------------------------------------------------------
# Scoring
# ------------------------------------------------------------------------------------------
def score(rs, out: Path, device: str) -> dict:
    from speechqe.engine.resynthesis import comparison_table, default_metrics
    from speechqe.engine.resynthesis import score_outputs as evaluate

    names, missing = default_metrics()
    if names:
        result = evaluate([rs.out_dir], names, out / "resynth.duckdb", device=device)
        table = comparison_table(result)
        return {"scored_by": "speechqe-metrics", "metrics": names, "missing": missing,
                "table": table}
    return {"scored_by": "bench-fallback", **fallback_scores(rs)}


def fallback_scores(rs) -> dict:
    """WER (Whisper tiny.en CTranslate2 + jiwer), MCD (WORLD + SPTK, DTW) and DNSMOS
    (speechmos) of each resynthesised clip against its original, used until the project's
    metrics are registered. Each number is computed the way the metric issues specify; the lead
    re-scores with the registered metrics."""
    from speechqe.audio import LoadedAudio

    rows = []
    asr = _asr()
    for it in rs.speech_set:
        if not it.ok:
            rows.append({"id": it.id, "error": it.error})
            continue
        gen = LoadedAudio.from_file(it.path).at(16000)
        ref = LoadedAudio.from_file(it.ref_path).at(16000)
        row = {"id": it.id}
        for tag, x in (("resynth", gen), ("original", ref)):
            hyp = asr(x)
            row[f"hyp_{tag}"] = hyp
            row[f"wer_{tag}"] = _wer(it.text or "", hyp)
            row[f"dnsmos_ovrl_{tag}"] = _dnsmos(x)
        row["mcd"] = _mcd(ref, gen, 16000)
        rows.append(row)
    ok = [r for r in rows if "error" not in r]

    def mean(key):
        return float(np.mean([r[key] for r in ok])) if ok else math.nan

    agg = {k: mean(k) for k in ("wer_resynth", "wer_original", "mcd", "dnsmos_ovrl_resynth",
                                "dnsmos_ovrl_original")}
    return {"aggregate": agg, "items": rows}


def _asr():
    from faster_whisper import WhisperModel

    from speechqe import assets

    model = WhisperModel(str(assets.get("whisper-tiny.en-ct2").path()), device="cpu",
                         compute_type="float32", cpu_threads=2)

    def run(x):
        segs, _ = model.transcribe(x.astype(np.float32), language="en", beam_size=1,
                                   condition_on_previous_text=False)
        return " ".join(s.text.strip() for s in segs)

    return run


def _normalise(text: str) -> str:
    import re

    return " ".join(re.sub(r"[^a-z0-9' ]+", " ", text.lower()).split())


def _wer(ref: str, hyp: str) -> float:
    import jiwer

    r, h = _normalise(ref), _normalise(hyp)
    return float(jiwer.wer(r, h)) if r else math.nan


def _dnsmos(x) -> float:
    from speechmos import dnsmos

    return float(dnsmos.run(x.astype(np.float32), 16000)["ovrl_mos"])


def _mcd(ref, gen, sr: int, order: int = 24, alpha: float = 0.42) -> float:
    """Mel-cepstral distortion (dB) with DTW: WORLD CheapTrick envelopes -> SPTK mel-cepstra
    (order 24, alpha 0.42 at 16 kHz), c0 excluded, frames aligned by DTW on the cepstra."""
    import pysptk
    import pyworld
    from scipy.spatial.distance import cdist

    def mcep(x):
        x = x.astype(np.float64)
        f0, t = pyworld.dio(x, sr, frame_period=5.0)
        f0 = pyworld.stonemask(x, f0, t, sr)
        sp = pyworld.cheaptrick(x, f0, t, sr)
        return pysptk.sp2mc(sp, order=order, alpha=alpha)[:, 1:]

    a, b = mcep(ref), mcep(gen)
    d = cdist(a, b)
    n, m = d.shape
    acc = np.full((n + 1, m + 1), np.inf)
    acc[0, 0] = 0.0
    for i in range(1, n + 1):
        row = d[i - 1]
        for j in range(1, m + 1):
            acc[i, j] = row[j - 1] + min(acc[i - 1, j], acc[i, j - 1], acc[i - 1, j - 1])
    # backtrack the path to average per aligned pair
    i, j, path = n, m, []
    while i > 0 and j > 0:
        path.append((i - 1, j - 1))
        k = int(np.argmin([acc[i - 1, j - 1], acc[i - 1, j], acc[i, j - 1]]))
        i, j = (i - 1, j - 1) if k == 0 else (i - 1, j) if k == 1 else (i, j - 1)
    diff = np.array([a[p] - b[q] for p, q in path])
    return float(10.0 / np.log(10) * np.mean(np.sqrt(2 * (diff ** 2).sum(1))))


if __name__ == "__main__":
    main(sys.argv[1:])
