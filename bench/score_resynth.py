"""Score resynthesis outputs (folders written by ``resynthesize``/``vocode_units``) and, for
context, the originals they came from, with the registered metrics through the runner; print
one table: bitrate beside quality, one row per tokenizer/vocoder pair plus ``original``.

    python bench/score_resynth.py out/unit_hifigan_cpu/resynth --metrics wer,cer,mcd,f0,speaker_sim,dnsmos,distillmos
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "2")


def main(argv=None) -> list[dict]:
    ap = argparse.ArgumentParser()
    ap.add_argument("outputs", nargs="+", type=Path)
    ap.add_argument("--metrics", default=None, help="default: the registered resynth metrics")
    ap.add_argument("--db", type=Path, default=None)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--no-originals", action="store_true")
    a = ap.parse_args(argv)

    from speechqe.manifest import SpeechSet, describe_file
    from speechqe.engine.resynthesis import comparison_table, default_metrics
    from speechqe.engine.resynthesis import score_outputs as evaluate
    from speechqe.vocoders.resynth import load_result

    names = a.metrics.split(",") if a.metrics else default_metrics()[0]
    outputs = list(a.outputs)
    if not a.no_originals:
        # The originals as one more "system", each its own reference: the ceiling of the table.
        first, _ = load_result(outputs[0])
        orig_dir = outputs[0].parent / "originals"
        items = []
        for it in first:
            if it.ref_path:
                items.append(describe_file(it.ref_path, item_id=f"original/{it.get('source_id')}",
                                           system="original", ref_path=it.ref_path,
                                           ref_sha256=it.ref_sha256, text=it.text))
        s = SpeechSet(tuple(items), name="originals")
        orig_dir.mkdir(parents=True, exist_ok=True)
        s.to_jsonl(orig_dir / "manifest.jsonl")
        (orig_dir / "bitrate.json").write_text(json.dumps({"system": "original", "bitrate": {
            "nominal_bps": None, "empirical_bps": None, "dedup_bps": None}}))
        outputs.append(orig_dir)
    db = a.db or outputs[0].parent / "resynth_scores.duckdb"
    result = evaluate(outputs, names, db, device=a.device)
    rows = comparison_table(result)
    print(json.dumps({"metrics": names, "run_id": result["run_id"], "table": rows}, indent=2))
    return rows


if __name__ == "__main__":
    main()
