"""``speechqe mos``: train, evaluate and apply MOS predictors.

Imports stay light at module level (typer, rich); torch and the learners load inside commands.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from speechqe.errors import SpeechQEError

from .common import console, fail

app = typer.Typer(
    name="mos",
    help="Train MOS predictors (UTMOS-style ensembles), evaluate predictions, score audio.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.command()
def train(
    config: Path = typer.Option(..., "--config", "-c", help="Training config (YAML); every key and its default: docs/mos.md#configuration-reference."),
    out: Path = typer.Option(..., "--out", "-o", help="New folder for the bundle."),
    device: Optional[str] = typer.Option(None, "--device", help="Override the config's device (auto, cpu, cuda, cuda:N)."),
    nested_folds: Optional[int] = typer.Option(None, "--nested-folds", help="Outer folds of the nested estimate of the whole ensemble (0: off); overrides the config's nested_folds (default auto: on without strong learners up to 2000 items)."),
    flow: bool = typer.Option(False, "--flow", help="Run as the train-mos-predictor Prefect flow: a rerun with the same config and data reuses the bundle in --out (see docs/orchestration.md)."),
) -> None:
    """Train every configured learner and the stacking ensemble; write a versioned bundle.

    Prints each member's out-of-fold metrics beside the ensemble's nested estimate (the whole
    stack fit inside outer folds), so you see whether stacking helped. Config reference and
    the small-test preset: docs/mos.md."""
    from speechqe.predictors.train import config_base, load_config, train_bundle

    try:
        cfg = load_config(config, device=device, nested_folds=nested_folds)  # fails fast, before Prefect starts
        if flow:
            if nested_folds is not None:
                raise SpeechQEError("--nested-folds is not passed to --flow: set nested_folds in the config")
            from speechqe.cli.flows import load_flows

            summary = load_flows("train", "speechqe mos train --flow").train_mos_predictor(
                config=str(config), out=str(out), device=device)
            from speechqe.predictors.bundle import read_meta

            if summary["status"] == "reused":
                console.print(f"{out} already holds this config's bundle (same training data): "
                              "not retrained", highlight=False)
            _print_report(read_meta(out)["report"])
            console.print(f"bundle {summary['bundle_id']}: {out}", highlight=False)
            return
        bundle = train_bundle(cfg, out, base=config_base(config), say=lambda m: console.print(m, highlight=False))
    except SpeechQEError as exc:
        fail(exc)
    _print_report(bundle.meta["report"])


def _num(x) -> str:
    return "" if x is None or x != x else f"{x:.3f}"


def _print_report(report: dict) -> None:
    """Members (out of fold) with their status and share of the ensemble, the stage-2
    candidates, and the ensemble's nested estimate, in one table."""
    table = Table(title="MOS ensemble: members out of fold, ensemble nested (training set)")
    for c in ("learner", "status", "share", "utt MSE", "utt LCC", "utt SRCC", "utt KTAU", "sys SRCC"):
        table.add_column(c, justify="left" if c in ("learner", "status") else "right", overflow="fold")
    members = report.get("members") or {}

    def add(name, ev, status="", share=None):
        u, s = ev["utterance"], ev["system"]
        table.add_row(name, status, "" if share is None else f"{share:.2f}",
                      *(_num(u[m]) for m in ("MSE", "LCC", "SRCC", "KTAU")), _num(s["SRCC"]))

    for name, ev in report["oof"].items():
        mi = members.get(name, {})
        add(name, ev, mi.get("status", ""), mi.get("weight"))
    for name, mi in members.items():
        if mi.get("status") == "failed":
            table.add_row(name, "failed", "", "", "", "", "", "")
    cands = report.get("candidates") or {}
    for name, ev in (report.get("stage2_oof") or {}).items():
        ci = cands.get(name, {})
        add(f"stage 2 {name}", ev, ci.get("status", ""), ci.get("weight"))
    nested = report.get("nested") or {}
    if nested.get("status") == "done":
        add("ENSEMBLE (nested)", nested["ensemble"], "estimate", None)
    console.print(table)
    for name, mi in members.items():
        if mi.get("reason") and mi.get("status") in ("failed", "degenerate"):
            console.print(f"  {name}: {mi['status']}: {mi['reason']}", highlight=False)
    if nested.get("status") == "done":
        e, b = nested["ensemble"], nested["members"][nested["best_member"]]
        d = nested["ensemble_minus_best_srcc"]
        verdict = ("stacking helped" if d > 0.01 else "stacking did not help, but costs nothing beyond noise"
                   if d >= -0.01 else "stacking is WORSE than the best member: use that member alone")
        console.print(
            f"nested estimate ({nested['outer_folds']} outer grouped folds): ensemble utterance SRCC "
            f"{_num(e['utterance']['SRCC'])} / system SRCC {_num(e['system']['SRCC'])}; best member "
            f"{nested['best_member']} {_num(b['utterance']['SRCC'])} / {_num(b['system']['SRCC'])} "
            f"({d:+.3f}): {verdict}. Labels' variance {report.get('label_variance', float('nan')):.4g}.",
            highlight=False)
    else:
        console.print(f"nested estimate: {nested.get('status', 'not recorded')}", highlight=False)


def _load_truth(data: Path, fmt: str, split: str, audio_root: Optional[Path]):
    from speechqe.predictors.data import DataSpec, load_data

    return load_data(DataSpec(format=fmt, path=str(data), split=split,
                              audio_root=str(audio_root) if audio_root else ""))


@app.command()
def evaluate(
    data: Path = typer.Argument(..., help="Labelled data: BVCC track folder, SHEET/NISQA CSV or JSONL."),
    fmt: str = typer.Option("sheet", "--format", "-f", help="bvcc, sheet, nisqa or jsonl."),
    split: str = typer.Option("test", "--split", help="BVCC split (train, dev, test)."),
    audio_root: Optional[Path] = typer.Option(None, "--audio-root", help="Folder the CSV's audio paths are relative to."),
    predictions: Optional[Path] = typer.Option(None, "--predictions", "-p", help="CSV of predictions (sample_id/id, prediction)."),
    bundle: Optional[Path] = typer.Option(None, "--bundle", "-b", help="Predict with this bundle instead."),
    component: str = typer.Option("ensemble", "--component", help="Bundle column to evaluate (default: the ensemble; 'all' for every column)."),
    system_mos: Optional[Path] = typer.Option(None, "--system-mos", help="True system MOS (CSV system,mean; BVCC mydata_system.csv)."),
    bootstrap: int = typer.Option(1000, "--bootstrap", help="Bootstrap resamples for the confidence intervals (0: none)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the bootstrap resamples."),
    min_match: float = typer.Option(0.5, "--min-match", min=0.0, max=1.0, help="Refuse predictions that cover fewer than this share of the labelled items (ids must match exactly)."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Also write the results as JSON."),
) -> None:
    """MSE, LCC, SRCC and KTAU at utterance and system level (VoiceMOS/SHEET definitions),
    with percentile bootstrap confidence intervals."""
    import numpy as np

    from speechqe.predictors.evaluate import evaluate as run_eval
    from speechqe.predictors.evaluate import match_predictions, read_predictions

    try:
        truth = _load_truth(data, fmt, split, audio_root)
        labelled = [it for it in truth if it.mos is not None]
        sys_true = _read_system_mos(system_mos) if system_mos else None
        results = {}
        if predictions is not None:
            preds = read_predictions(predictions)
            cols = {"predictions": match_predictions([it.id for it in labelled], preds, min_match,
                                                     str(predictions))}
        elif bundle is not None:
            from speechqe.predictors.bundle import MOSBundle
            from speechqe.predictors.train import predict_set

            b = MOSBundle.load(bundle)
            outs, _ = predict_set(b, truth.replace_items(labelled))
            cols = outs if component == "all" else {component: outs[component]}
        else:
            raise SpeechQEError("give --predictions CSV or --bundle DIR")
        y = np.array([it.mos for it in labelled])
        for name, p in cols.items():
            ok = np.isfinite(p)
            ev = run_eval(y[ok], p[ok], [it.system for it, k in zip(labelled, ok) if k],
                          system_true=sys_true, bootstrap=bootstrap, seed=seed)
            results[name] = {**ev.to_dict(), "n_missing": int((~ok).sum()),
                             "missing": [it.id for it, k in zip(labelled, ok) if not k][:20]}
    except (SpeechQEError, ValueError) as exc:
        fail(exc)
    for name, r in results.items():
        table = Table(title=f"{name}: {r['n_items']} items, {r['n_systems']} systems"
                      + (f", {r['n_missing']} without a prediction" if r["n_missing"] else ""))
        table.add_column("level")
        for m in ("MSE", "LCC", "SRCC", "KTAU"):
            table.add_column(m, justify="right")
        for level in ("utterance", "system"):
            ci = r["ci"].get(level, {})
            table.add_row(level, *(
                f"{r[level][m]:.4f}" + (f" [{ci[m][0]:.3f}, {ci[m][1]:.3f}]" if m in ci else "")
                for m in ("MSE", "LCC", "SRCC", "KTAU")))
        console.print(table)
    if json_out:
        json_out.write_text(json.dumps(results, indent=1), encoding="utf-8")


def _read_system_mos(path: Path) -> dict[str, float]:
    import csv

    out = {}
    with open(path, newline="", encoding="utf-8") as f:
        for row in csv.reader(f):
            if not row:
                continue
            try:
                out[row[0].strip()] = float(row[1])
            except (ValueError, IndexError):
                continue  # header
    if not out:
        raise SpeechQEError(f"no system scores read from {path}")
    return out


@app.command()
def predict(
    bundle: Path = typer.Option(..., "--bundle", "-b", help="A trained bundle."),
    path: Path = typer.Argument(..., help="Folder of audio, JSONL manifest or SHEET CSV."),
    out: Path = typer.Option(Path("mos-predictions.csv"), "--out", "-o", help="CSV to write."),
    component: str = typer.Option("all", "--component", help="'all' columns or one column name (ensemble, strong, ct2-svr...)."),
) -> None:
    """Predict MOS for every item; failed items are written with their error, never dropped."""
    import csv

    from speechqe.manifest import load_speech_set

    from speechqe.predictors.bundle import MOSBundle
    from speechqe.predictors.train import predict_set

    try:
        sset = load_speech_set(path)
        b = MOSBundle.load(bundle)
        cols = None if component in ("all", "ensemble") else [component]
        outs, errors = predict_set(b, sset, columns=cols, ensemble=component in ("all", "ensemble"))
    except SpeechQEError as exc:
        fail(exc)
    names = list(outs) if component == "all" else [component]
    with open(out, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["sample_id", "system_id", "prediction", *[f"pred_{n}" for n in names if n != "ensemble"], "status", "error"])
        main = "ensemble" if "ensemble" in outs else names[0]
        for i, it in enumerate(sset):
            err = errors[i]
            w.writerow([it.id, it.system, "" if err else f"{outs[main][i]:.6f}",
                        *["" if err else f"{outs[n][i]:.6f}" for n in names if n != "ensemble"],
                        "error" if err else "ok", str(err) if err else ""])
    n_err = sum(e is not None for e in errors)
    console.print(f"{len(sset)} items scored ({n_err} errors) -> {out}", highlight=False)
