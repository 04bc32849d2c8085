"""Layer interfaces on the token task: a weighted sum and a hierarchical convolution over all
hidden states of an encoder, each fitted with a CTC character head on the fit set's
transcripts (``speechqe.vocoders.layer_interface``), then tokenized (k-means, K), vocoded with
the WORLD unit vocoder and scored on held-out clips beside single-layer tokenizers: one
``units sweep`` table (``speechqe.engine.sweep``), every row fitted on the same clips.

    python bench/aggregator_tokens.py --fit out/lj/fit --heldout out/lj/heldout \
        --text ../shared/corpora/ljspeech-32/transcripts.tsv --encoder whisper-tiny.en \
        --layers 2,3 --k 500 --out out/aggregator_tokens

Prints the table; writes OUT/sweep.{json,csv,md} and OUT/interfaces.json (fit facts).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser()
    ap.add_argument("--fit", type=Path, required=True)
    ap.add_argument("--heldout", type=Path, required=True)
    ap.add_argument("--text", type=Path, required=True, help="id<TAB>text of fit and held-out")
    ap.add_argument("--encoder", default="whisper-tiny.en")
    ap.add_argument("--layers", default="2", help="single-layer baselines")
    ap.add_argument("--k", default="500")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--channels", type=int, default=128, help="hconv channels")
    ap.add_argument("--metrics", default="wer,cer,mcd,f0,speaker_sim,dnsmos")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--db", type=Path, default=None, help="results store (default OUT/sweep."
                    "duckdb; a sweep's store reuses its scores of the same outputs)")
    a = ap.parse_args(argv)

    from speechqe.encoders import FeatureCache
    from speechqe.encoders.aggregate import AggregatorConfig, save_aggregator
    from speechqe.engine.sweep import SweepConfig, run_sweep, table_markdown
    from speechqe.manifest import load_speech_set
    from speechqe.vocoders.features import load_any_encoder
    from speechqe.vocoders.layer_interface import InterfaceFitConfig, fit_ctc_interface

    fit = load_speech_set(a.fit, text_file=a.text)
    held = load_speech_set(a.heldout, text_file=a.text)
    base = load_any_encoder(a.encoder)
    a.out.mkdir(parents=True, exist_ok=True)
    specs, facts = [], {}
    for kind, agg_cfg in (("weighted_sum", AggregatorConfig(kind="weighted_sum")),
                          ("hconv", AggregatorConfig(kind="hconv", channels=a.channels))):
        path = a.out / f"interface-{kind}.safetensors"
        if not path.is_file():
            cfg = InterfaceFitConfig(aggregator=agg_cfg, steps=a.steps)
            agg, info = fit_ctc_interface(fit, base, cfg, cache=FeatureCache(), log=print)
            save_aggregator(path, agg, agg_cfg, a.encoder, info)
            facts[kind] = info
        else:
            from speechqe.encoders.aggregate import load_aggregator

            facts[kind] = load_aggregator(path)[2]["meta"]
        specs.append(f"aggregate:{path.resolve()}")
    (a.out / "interfaces.json").write_text(json.dumps(facts, indent=2))
    # single-layer baselines (their own settings), then the two interfaces, one table
    cfg = SweepConfig(encoders=[a.encoder, *specs], layers=[int(x) for x in a.layers.split(",")],
                      ks=[int(x) for x in a.k.split(",")], metrics=a.metrics.split(","))
    summary = run_sweep(held, fit, cfg, a.out, a.db)
    print(table_markdown(summary["rows"]))
    print(json.dumps(facts, indent=2))
    return summary


if __name__ == "__main__":
    main()
