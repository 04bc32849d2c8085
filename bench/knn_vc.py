"""kNN voice conversion on LibriSpeech test-other speakers: speaker similarity to the target
vs the source, and intelligibility (the acceptance of issue 13's ``--vocoder knn``).

Design (per ordered pair A -> B of the corpus' speakers, B = the next speaker in sorted order):

* sources: A's utterances 0..4 (sorted by id);
* B's matching set: B's utterances 3..9; B's reference (the target embedding): B's
  utterances 0..2, which the matching set never saw;
* A's reference (the source embedding): A's utterances 5..9, which are never converted; the
  similarity to the converted utterance's own original is reported too;
* WER/CER: against the ASR transcript of each original (faster-whisper tiny.en, the corpus
  folder has no transcripts), so 0 means "ASR reads the conversion as it reads the original".

    python bench/knn_vc.py ../shared/corpora/librispeech-test-other-spk --out out/knn_vc \
        --encoder whisper-tiny.en --layer 2 --k 4

Prints one JSON summary; writes OUT/summary.json and OUT/items.csv.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser()
    ap.add_argument("corpus", type=Path)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--encoder", default="whisper-tiny.en")
    ap.add_argument("--layer", type=int, default=2)
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--sources", type=int, default=5, help="utterances of A converted")
    ap.add_argument("--speakers", type=int, default=10)
    a = ap.parse_args(argv)

    import numpy as np

    from speechqe.asr.backends import BackendConfig, load_backend
    from speechqe.audio import LoadedAudio
    from speechqe.encoders import FeatureCache
    from speechqe.engine.resynthesis import comparison_table, conversion_similarity, score_outputs
    from speechqe.manifest import SpeechSet, from_folder
    from speechqe.vocoders.features import load_feature_source
    from speechqe.vocoders.knn import KnnConfig, KnnVocoder, build_matching_set
    from speechqe.vocoders.resynth import ResynthOptions, convert_set
    from speechqe.vocoders.world import WorldAnalyzer

    t0 = time.perf_counter()
    full = from_folder(a.corpus)
    by_spk: dict[str, list] = {}
    for it in sorted(full, key=lambda i: i.id):
        if it.ok:
            by_spk.setdefault(it.id.split("/")[0], []).append(it)
    speakers = sorted(by_spk)[: a.speakers]
    sub = lambda items, name: SpeechSet(tuple(items), name=name)  # noqa: E731

    # pseudo-references: the ASR transcript of every original
    asr = load_backend(BackendConfig())
    originals = [it for s in speakers for it in by_spk[s][: a.sources]]
    hyps = asr.transcribe([LoadedAudio.from_file(it.path).at(16000) for it in originals])
    text = {it.id: h.strip() for it, h in zip(originals, hyps)}

    src = load_feature_source(a.encoder, a.layer)
    cfg = KnnConfig(k=a.k)
    analyzer = WorldAnalyzer(cfg.analysis, FeatureCache())
    outputs, items_out = [], []
    for i, spk_a in enumerate(speakers):
        spk_b = speakers[(i + 1) % len(speakers)]
        utt_a, utt_b = by_spk[spk_a], by_spk[spk_b]
        sources = sub([it.replace(text=text[it.id]) for it in utt_a[: a.sources]], f"src-{spk_a}")
        ms = build_matching_set(sub(utt_b[3:], f"match-{spk_b}"), src, analyzer)
        voc = KnnVocoder(ms, cfg)
        voc.analyzer = analyzer
        res = convert_set(sources, src, voc, a.out / f"{spk_a}-to-{spk_b}",
                          ResynthOptions(system=f"{spk_a}-to-{spk_b}"))
        sim = conversion_similarity(res.speech_set, sub(utt_b[:3], f"ref-{spk_b}"),
                                    source_refs={it.id: sub(utt_a[5:], f"ref-{spk_a}")
                                                 for it in res.speech_set})
        own = conversion_similarity(res.speech_set, sub(utt_b[:3], f"ref-{spk_b}"))
        for x, y in zip(sim["items"], own["items"]):
            items_out.append({"pair": f"{spk_a}->{spk_b}", "id": x["id"],
                              "sim_target": x["sim_target"], "sim_source_speaker": x["sim_source"],
                              "sim_source_utterance": y["sim_source"],
                              "matching_seconds": ms.meta["seconds"]})
        outputs.append(res.out_dir)
    result = score_outputs(outputs, ["wer", "cer"], a.out / "scores.duckdb", name="knn-vc")
    rows = comparison_table(result)
    corpus_wer = _pooled(result, "wer")
    st = np.array([r["sim_target"] for r in items_out])
    ss = np.array([r["sim_source_speaker"] for r in items_out])
    su = np.array([r["sim_source_utterance"] for r in items_out])
    summary = {
        "encoder": src.encoder_id, "layer": src.resolved_layer, "k": a.k,
        "pairs": len(speakers), "conversions": len(items_out),
        "mean_sim_target": float(st.mean()), "mean_sim_source_speaker": float(ss.mean()),
        "mean_sim_source_utterance": float(su.mean()),
        "target_closer_than_source_speaker": float((st > ss).mean()),
        "target_closer_than_source_utterance": float((st > su).mean()),
        "wer_vs_asr_of_originals": corpus_wer, "cer_vs_asr_of_originals": _pooled(result, "cer"),
        "per_pair": rows, "seconds": round(time.perf_counter() - t0, 1),
    }
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "summary.json").write_text(json.dumps(summary, indent=2))
    with open(a.out / "items.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(items_out[0]))
        w.writeheader()
        w.writerows(items_out)
    print(json.dumps({k: v for k, v in summary.items() if k != "per_pair"}, indent=2))
    return summary


def _pooled(result: dict, metric: str) -> float:
    """The run's corpus-level value of ``metric`` over all systems (the ``ALL`` aggregate)."""
    for agg in result["aggregates"]:
        if agg["system"] == "ALL" and agg["metric"] == metric:
            return agg["mean"]
    return float("nan")


if __name__ == "__main__":
    main()
