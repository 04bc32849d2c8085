"""``speechqe units train|encode`` and ``speechqe resynth`` (typer sub-apps).

Module-level imports stay light (typer, rich): torch and the encoders load inside commands.
``speechqe.cli.main`` mounts these with ``app.add_typer(units_app, name="units")`` and
``app.command("resynth")(resynth)``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer
from rich.table import Table

from speechqe.errors import ConfigError, SpeechQEError

from .common import console, fail

app = typer.Typer(help="Speech tokens and token vocoders.", no_args_is_help=True,
                  add_completion=False, pretty_exceptions_enable=False)
units_app = typer.Typer(help="K-means speech units: train a codebook, encode a speech set.",
                        no_args_is_help=True, add_completion=False,
                        pretty_exceptions_enable=False)
app.add_typer(units_app, name="units")


def _load_set(path: Path, text: Optional[Path]):
    from speechqe.manifest import load_speech_set

    return load_speech_set(path, text_file=text)


@units_app.command("train")
def units_train(
    speech_set: Path = typer.Argument(..., help="folder of audio, .jsonl manifest or SHEET .csv"),
    out: Path = typer.Option(..., "--out", "-o", help="codebook file (.npz)"),
    encoder: str = typer.Option("whisper-ct2", help="encoder spec: whisper-ct2, logmel, "
                                "ssl:<checkpoint>, whisper:<model> ..."),
    layer: Optional[int] = typer.Option(None, help="hidden-state index (default: last)"),
    k: int = typer.Option(100, "--k", help="number of units"),
    epochs: int = typer.Option(5, help="passes over the features"),
    batch_size: int = typer.Option(10000, help="frames per k-means update"),
    backend: str = typer.Option("auto", help="auto, torch or sklearn"),
    max_frames_per_item: Optional[int] = typer.Option(None, help="subsample long items"),
    device: str = typer.Option("cpu", help="cpu, cuda or cuda:N: where the encoder and k-means run"),
    cache_dir: Optional[Path] = typer.Option(None, help="feature cache folder"),
    no_cache: bool = typer.Option(False, "--no-cache", help="compute features without reading or writing the feature cache"),
    seed: int = typer.Option(0, help="k-means initialisation and subsampling seed"),
) -> None:
    """Fit a K-means codebook on an encoder layer's features of a speech set."""
    try:
        from speechqe.vocoders.features import load_feature_source
        from speechqe.vocoders.tokenize import train_codebook
        from speechqe.vocoders.units import KMeansConfig

        sset = _load_set(speech_set, None)
        src = load_feature_source(encoder, layer, device=device,
                                  cache_dir=str(cache_dir) if cache_dir else None,
                                  use_cache=not no_cache)
        cfg = KMeansConfig(k=k, batch_size=batch_size, epochs=epochs, backend=backend,
                           device=device, seed=seed)
        cb = train_codebook(sset, src, cfg, max_frames_per_item=max_frames_per_item)
        path = cb.save(out)
    except SpeechQEError as exc:
        fail(exc)
    info = cb.info
    console.print(
        f"codebook {path}: k={cb.k}, {cb.encoder} layer {cb.layer}, {cb.frame_rate:g} frames/s, "
        f"{info['frames']} frames from {info['items']} items, inertia {info['inertia']:.4g}, "
        f"{info['seconds']:.1f} s ({info['backend']})", highlight=False)
    for item_id, reason in info.get("skipped", {}).items():
        console.print(f"[yellow]skipped {item_id}[/]: {reason}", highlight=False)


def _bitrate_table(br) -> Table:
    t = Table(title="unit stream bitrate")
    for c in ("frame rate", "K", "nominal bps", "entropy bits", "empirical bps",
              "dedup tok/s", "dedup bps", "+durations bps"):
        t.add_column(c, justify="right")
    t.add_row(f"{br.frame_rate:g}", str(br.k), f"{br.nominal_bps:.1f}", f"{br.entropy_bits:.3f}",
              f"{br.empirical_bps:.1f}", f"{br.dedup_tokens_per_s:.1f}", f"{br.dedup_bps:.1f}",
              f"{br.dedup_with_durations_bps:.1f}")
    return t


@units_app.command("encode")
def units_encode(
    speech_set: Path = typer.Argument(..., help="folder of audio, .jsonl manifest or SHEET .csv"),
    codebook: Path = typer.Option(..., "--codebook", "-c", help="codebook file (.npz) from 'speechqe units train'"),
    out: Path = typer.Option(..., "--out", "-o", help="units file (.jsonl)"),
    encoder: Optional[str] = typer.Option(None, help="encoder spec (default: the codebook's)"),
    dedup: bool = typer.Option(False, "--dedup", help="run-length deduplicate (keep durations)"),
    text: Optional[Path] = typer.Option(None, help="id<TAB>text transcripts"),
    device: str = typer.Option("cpu", help="cpu, cuda or cuda:N: where the encoder runs"),
    cache_dir: Optional[Path] = typer.Option(None, help="feature cache folder"),
    no_cache: bool = typer.Option(False, "--no-cache", help="compute features without reading or writing the feature cache"),
) -> None:
    """Encode a speech set into unit sequences and report the stream's bitrate."""
    try:
        from speechqe.vocoders.features import load_feature_source
        from speechqe.vocoders.tokenize import encode_set
        from speechqe.vocoders.units import Codebook, bitrate_report, write_units

        cb = Codebook.load(codebook)
        spec = encoder or cb.info.get("encoder_spec")
        if not spec:
            raise ConfigError("the codebook does not name its encoder spec: pass --encoder")
        src = load_feature_source(spec, cb.layer, device=device,
                                  cache_dir=str(cache_dir) if cache_dir else None,
                                  use_cache=not no_cache)
        sset = _load_set(speech_set, text)
        res = encode_set(sset, src, cb, dedup=dedup, device=device)
        write_units(out, res.records, cb, dedup)
        br = bitrate_report(res.units(), cb.frame_rate, cb.k) if res.records else None
    except SpeechQEError as exc:
        fail(exc)
    console.print(f"{len(res.records)} unit sequences written to {out}", highlight=False)
    for item_id, reason in res.errors.items():
        console.print(f"[yellow]error {item_id}[/]: {reason}", highlight=False)
    if br is not None:
        console.print(_bitrate_table(br))
        Path(str(out) + ".bitrate.json").write_text(json.dumps(br.to_dict(), indent=2))


def _csv(text: str, cast=str) -> list:
    try:
        return [cast(x.strip()) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ConfigError(f"not a comma-separated list of {cast.__name__}: {text!r}") from None


@units_app.command("sweep")
def units_sweep(
    speech_set: Path = typer.Argument(..., help="held-out originals (folder, .jsonl or .csv)"),
    fit: Path = typer.Option(..., "--fit", help="speech set the codebooks and the vocoder's "
                             "statistics are fitted on"),
    out: Path = typer.Option(..., "--out", "-o", help="output folder (one sub-folder per "
                             "setting; sweep.json, sweep.csv, sweep.md)"),
    encoders: str = typer.Option("whisper-tiny.en,whisper-ct2,logmel", "--encoders",
                                 help="comma-separated encoder specs (ssl:<checkpoint> too)"),
    layers: Optional[str] = typer.Option(None, "--layers", help="comma-separated hidden states "
                                         "for encoders with several (default: the last)"),
    ks: str = typer.Option("50,100,200,500,1000", "--k", help="comma-separated codebook sizes"),
    vocoder: str = typer.Option("world", "--vocoder", help="training-free vocoder: world"),
    f0: str = typer.Option("source", "--f0", help="source or units"),
    text: Optional[Path] = typer.Option(None, help="id<TAB>text transcripts of the held-out "
                                        "set (for WER/CER)"),
    metrics: Optional[str] = typer.Option(None, help="comma-separated (default: wer, cer, "
                                          "mcd, f0, speaker_sim, dnsmos)"),
    epochs: int = typer.Option(10, help="k-means passes"),
    no_originals: bool = typer.Option(False, "--no-originals", help="leave out the originals' "
                                      "row"),
    db: Optional[Path] = typer.Option(None, help="results store (default: OUT/sweep.duckdb)"),
    device: str = typer.Option("cpu", help="cpu, cuda or cuda:N: where encoders, k-means and vocoders run"),
) -> None:
    """Fit, encode, resynthesise held-out items and score every tokenizer setting (encoder x
    layer x K) with a training-free vocoder: one rate-quality table."""
    try:
        from speechqe.config import validate
        from speechqe.engine.sweep import SweepConfig, run_sweep, table_markdown

        data = {"encoders": _csv(encoders), "ks": _csv(ks, int), "vocoder": vocoder, "f0": f0,
                "epochs": epochs, "originals": not no_originals, "device": device}
        if layers:
            data["layers"] = _csv(layers, int)
        if metrics:
            data["metrics"] = _csv(metrics)
        cfg = validate(SweepConfig, data, "units sweep")
        summary = run_sweep(_load_set(speech_set, text), _load_set(fit, None), cfg, out, db,
                            log=lambda m: console.print(m, highlight=False))
    except SpeechQEError as exc:
        fail(exc)
    console.print(table_markdown(summary["rows"]), highlight=False)
    console.print(f"run {summary['run_id']}: {summary['settings']} settings -> {out}/sweep.md",
                  highlight=False)


@app.command("resynth")
def resynth(
    speech_set: Path = typer.Argument(..., help="the originals (folder, .jsonl or .csv)"),
    codebook: List[Path] = typer.Option(..., "--codebook", "-c",
                                        help="one per pair (repeat, aligned with --vocoder)"),
    vocoder: List[str] = typer.Option(..., "--vocoder", "-v",
                                      help="unit HiFi-GAN checkpoint file or folder, a WORLD "
                                      "unit vocoder (.safetensors), or 'world' / 'knn' "
                                      "(training-free, fitted on --fit)"),
    out: Path = typer.Option(..., "--out", "-o", help="output folder"),
    text: Optional[Path] = typer.Option(None, help="id<TAB>text transcripts (for WER/CER)"),
    fit: Optional[Path] = typer.Option(None, "--fit", help="speech set that 'world' is fitted "
                                       "on (unit statistics), or the target speaker's matching "
                                       "set for 'knn'"),
    f0: str = typer.Option("source", "--f0", help="world: F0 from the 'source', predicted "
                           "from the 'units', or a folder of contours <id>.npy|.txt|.csv"),
    knn_k: int = typer.Option(4, "--knn-k", help="knn: neighbours averaged per frame"),
    knn_inputs: str = typer.Option("continuous", "--knn-inputs",
                                   help="knn: 'continuous' features or the codebook 'units'"),
    metrics: Optional[str] = typer.Option(None, help="comma-separated metrics (default: the "
                                          "registered ones among wer, cer, mcd, f0, "
                                          "speaker_sim, dnsmos, distillmos)"),
    no_score: bool = typer.Option(False, "--no-score", help="only write the waveforms"),
    dedup: bool = typer.Option(False, "--dedup", help="vocode run-length deduplicated units, "
                               "each repeated for its true duration (default: frame units)"),
    predict_durations: bool = typer.Option(False, "--predict-durations",
                                           help="vocode deduplicated units with durations from "
                                           "the vocoder's duration predictor (implies --dedup; "
                                           "the unit-to-speech setting)"),
    db: Optional[Path] = typer.Option(None, help="results store (default: OUT/resynth.duckdb)"),
    device: str = typer.Option("cpu", help="cpu, cuda or cuda:N: where encoders, vocoders and metrics run"),
    batch_size: int = typer.Option(8, help="sequences per vocoder forward pass (never changes the waveforms)"),
    workers: int = typer.Option(1, help="scoring worker processes"),
    flow: bool = typer.Option(False, "--flow", help="run as the resynthesis-eval Prefect flow: "
                              "a rerun vocodes and scores only what changed (see "
                              "docs/orchestration.md)"),
) -> None:
    """Speech set -> units -> waveform -> scores against the originals, one row per
    tokenizer/vocoder pair with its bitrate. With '--vocoder knn --fit TARGET' the items are
    converted to the target's voice, and the row adds speaker similarity to the target (the
    --fit set's mean embedding) vs to the source (each item's original)."""
    try:
        from speechqe.engine.resynthesis import (
            choose_metrics,
            comparison_table,
            conversion_similarity,
            score_outputs,
        )
        from speechqe.vocoders.resynth import (
            COMPARISON_NAME,
            STORE_NAME,
            ResynthOptions,
            check_pairs,
            load_pair,
            pair_dir,
            resynthesize,
        )

        if len(codebook) != len(vocoder):
            raise ConfigError("give one --codebook per --vocoder (pairs in order)")
        check_pairs(codebook, vocoder, fit)
        names = [m.strip() for m in metrics.split(",") if m.strip()] if metrics else None
        opts = ResynthOptions(dedup=dedup or predict_durations,
                              durations="predict" if predict_durations else "keep",
                              batch_size=batch_size, device=device, f0=f0, knn_k=knn_k,
                              knn_inputs=knn_inputs)
        if flow:
            if no_score or workers != 1:
                raise ConfigError("--flow always scores, on the flow's task runner: drop "
                                  "--no-score and --workers")
            result, rows = _resynth_flow(speech_set, codebook, vocoder, out, text, names, dedup,
                                         predict_durations, db, device, batch_size, fit, opts)
        else:
            sset = _load_set(speech_set, text)
            fit_set = _load_set(fit, None) if fit is not None else None
            outs, conversions = [], {}
            for k, (cb_path, voc_path) in enumerate(zip(codebook, vocoder)):
                cb, src, voc = load_pair(cb_path, voc_path, device=device, fit_set=fit_set,
                                         opts=opts, save_dir=pair_dir(out, k))
                res = resynthesize(sset, src, cb, voc, pair_dir(out, k), opts)
                console.print(f"{res.system}: {len(res.speech_set) - len(res.errors)} written, "
                              f"{len(res.errors)} errors -> {res.out_dir}", highlight=False)
                outs.append(res.out_dir)
                if str(voc_path) == "knn" and not no_score:
                    conversions[res.system] = conversion_similarity(res.speech_set, fit_set)
            if no_score:
                return
            names, missing = choose_metrics(names)
            if missing:
                console.print(f"[yellow]not registered, left out:[/] {', '.join(missing)}",
                              highlight=False)
            result = score_outputs(outs, names, db or out / STORE_NAME, device=device,
                              workers=workers)
            rows = comparison_table(result)
            for r in rows:  # kNN-VC: speaker similarity to the target (--fit) vs the source
                if r["system"] in conversions:
                    c = conversions[r["system"]]
                    r.update(sim_to_target=c["mean_sim_target"],
                             sim_to_source=c["mean_sim_source"],
                             target_closer=c["target_closer"])
            (out / COMPARISON_NAME).write_text(json.dumps(rows, indent=2))
    except SpeechQEError as exc:
        fail(exc)
    cols = list(dict.fromkeys(c for r in rows for c in r))
    t = Table(title=f"resynthesis (run {result['run_id']})")
    for c in cols:
        t.add_column(c, justify="right" if c != "system" else "left")
    for r in rows:
        t.add_row(*[f"{r[c]:.3f}" if isinstance(r.get(c), float) else
                    "–" if c in r and r[c] is None else str(r.get(c, "")) for c in cols])
    console.print(t)


def _resynth_flow(speech_set, codebook, vocoder, out, text, metrics, dedup, predict_durations,
                  db, device, batch_size, fit, opts):
    """Run the resynthesis-eval flow (it writes comparison.json); print each pair's status."""
    from speechqe.cli.flows import load_flows

    summary = load_flows("resynthesis", "speechqe resynth --flow").resynthesis_eval(
        source=str(speech_set), codebooks=[str(c) for c in codebook],
        vocoders=[str(v) for v in vocoder], out=str(out), store=str(db) if db else None,
        metrics=metrics, transcripts=str(text) if text else None, device=device, dedup=dedup,
        predict_durations=predict_durations, batch_size=batch_size,
        fit=str(fit) if fit else None, f0=opts.f0, knn_k=opts.knn_k, knn_inputs=opts.knn_inputs,
    )
    for p in summary["pairs"]:
        console.print(f"{p['system']}: {p['status']}, {p['n_items'] - p['n_errors']} written, "
                      f"{p['n_errors']} errors -> {p['out']}", highlight=False)
    console.print(f"scored {summary['n_scored_items']} items, reused "
                  f"{summary['n_reused_items']} (store {summary['store']})", highlight=False)
    return {"run_id": summary["run_id"]}, summary["comparison"]
