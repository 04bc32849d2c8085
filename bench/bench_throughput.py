"""Throughput and memory of ``speechqe score`` against the per-file loop, side by side in one
run (issue 11). One command; ``--quick`` runs every section on a few items to check the script.

    OMP_NUM_THREADS=1 nice -n -5 python bench/bench_throughput.py [--quick] [--out DIR]
        [--only single,warm,nightly,memory,long] [--workers N] [--long-minutes 120]

Sections (each variant runs as its own process, timed from start to exit, its peak RSS
sampled every 0.1 s over the process and its children; the machine's load average is
recorded before and after each section):

1. ``single``: 32 LJSpeech clips (16 kHz) + white noise at 10 dB against the clean clips;
   pesq, stoi, estoi, si_sdr, mcd, f0, dnsmos. ``bench/loop_baseline.py`` (the per-file loop
   around the same libraries) vs ``speechqe score`` (cold: new store and analysis cache).
   Values compared per item and metric (PESQ, STOI, ESTOI, MCD, F0, DNSMOS to 1e-6).
   Target: >= 1.9x the loop on 2 cores.
2. ``warm``: the same command again on the warm store. Target: < 5% of the cold run.
3. ``nightly``: 4 systems x the same 32 references, + wer and speaker_sim; the loop on night
   2's outputs vs ``speechqe score`` on night 1 (cold) and on night 2 (new outputs, references
   analysed by night 1). Target: >= 3x the loop for night 2.
4. ``memory``: N = 50, 200, 1000 items (3 s crops of ../shared/corpora with noise, each a
   distinct file and reference); pesq, stoi, si_sdr, dnsmos. Target: peak RSS at 1000 within
   1.5x of 200.
5. ``long``: a two-hour 16 kHz file (corpus speech with noise, and its reference) beside four
   short items, the single-system metrics. Target: peak RSS under 2 GB for the whole run; the
   long file gets DNSMOS (read window by window) and ``too_long`` records for the rest.

Writes ``results.json`` and prints a markdown summary. Data and stores go to ``--out``
(default ``bench-out/throughput``); the data are made once and reused.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CORPORA = Path(os.environ.get("SPEECHQE_CORPORA", ROOT.parent / "shared" / "corpora"))
if not CORPORA.is_dir():
    CORPORA = Path("/work/shared/corpora")
SR = 16000
SINGLE = ["pesq", "stoi", "estoi", "si_sdr", "mcd", "f0", "dnsmos"]
NIGHTLY = SINGLE + ["wer", "speaker_sim"]
MEMORY = ["pesq", "stoi", "si_sdr", "dnsmos"]
EXACT = ("pesq", "stoi", "estoi", "mcd", "f0_rmse_cents", "f0_corr", "vuv_error", "f0_gpe",
         "dnsmos_sig", "dnsmos_bak", "dnsmos_ovrl", "dnsmos_p808")


# ------------------------------------------------------------------------------------------
# Measuring a command
# ------------------------------------------------------------------------------------------
def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def measure(cmd: list[str], log: Path) -> dict:
    """Run ``cmd``; wall seconds, CPU seconds (user + system of the process and every process
    it waited for: its workers) and peak RSS (sum over the process tree, and the largest single
    process), sampled every 0.1 s. On a machine shared with other jobs the wall time depends on
    their load; the CPU time much less (it says what the work costs, and on an idle machine
    with N cores the wall time cannot be below CPU / N)."""
    import resource

    import psutil

    log.parent.mkdir(parents=True, exist_ok=True)
    peak_tree = peak_proc = 0
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    with open(log, "w") as f:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=ROOT)
        ps = psutil.Process(proc.pid)
        while proc.poll() is None:
            try:
                procs = [ps] + ps.children(recursive=True)
                rss = []
                for p in procs:
                    try:
                        rss.append(p.memory_info().rss)
                    except psutil.Error:
                        pass
                peak_tree = max(peak_tree, sum(rss))
                peak_proc = max(peak_proc, max(rss, default=0))
            except psutil.Error:
                pass
            time.sleep(0.1)
        wall = time.perf_counter() - t0
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}); see {log}")
    cpu = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
    return {"seconds": round(wall, 2), "cpu_seconds": round(cpu, 1),
            "peak_rss_gb": round(peak_tree / 2**30, 3),
            "peak_process_rss_gb": round(peak_proc / 2**30, 3), "log": str(log)}


def speechqe(source: Path, db: Path, metrics: list[str], ref: Path, *, text: Path | None = None,
             workers: int | None = None, log: Path) -> dict:
    cmd = [sys.executable, "-m", "speechqe.cli.main", "score", str(source), "--ref", str(ref),
           "--metrics", ",".join(metrics), "--db", str(db), "--progress", "plain"]
    if text:
        cmd += ["--text", str(text)]
    if workers:
        cmd += ["--workers", str(workers)]
    return measure(cmd, log)


def loop(systems: Path, refs: Path, out: Path, *, text: Path | None = None, log: Path) -> dict:
    cmd = [sys.executable, str(ROOT / "bench" / "loop_baseline.py"), str(systems), str(refs),
           str(out)]
    if text:
        cmd += ["--text", str(text), "--nightly"]
    return measure(cmd, log)


def stored_values(db: Path) -> dict[str, float]:
    """``item|metric -> value`` of the latest run of a store."""
    from speechqe.store import Store

    with Store(db, read_only=True) as st:
        rows = st.results(st.run("latest")["run_id"])
    return {f"{r['item_id']}|{r['metric']}": r["value"] for r in rows}


def compare(loop_json: Path, db: Path) -> dict[str, float]:
    """Largest |loop - speechqe| per metric (the loop's keys; ``wer`` is the per-item rate)."""
    a = json.loads(loop_json.read_text())["values"]
    b = stored_values(db)
    worst: dict[str, float] = {}
    for k, v in a.items():
        metric = k.split("|")[1]
        got = b.get(k)
        d = float("inf") if got is None or not np.isfinite(got) else abs(got - v)
        worst[metric] = max(worst.get(metric, 0.0), d)
    return worst


# ------------------------------------------------------------------------------------------
# Data
# ------------------------------------------------------------------------------------------
def _write(path: Path, x: np.ndarray) -> None:
    import soundfile as sf

    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, x, SR, subtype="PCM_16")


def lj_clips(n: int) -> list[tuple[str, np.ndarray]]:
    from speechqe.audio import LoadedAudio

    wavs = sorted((CORPORA / "ljspeech-32" / "wavs").glob("*.wav"))[:n]
    out = []
    for p in wavs:
        a = LoadedAudio.from_file(p)
        x = a.at(SR)
        out.append((p.stem, (0.9 * x / np.abs(x).max()).astype(np.float32)))
    return out


def make_single(root: Path, n: int) -> Path:
    from speechqe import degrade

    if (root / "done").exists():
        return root
    for k, (name, x) in enumerate(lj_clips(n)):
        _write(root / "ref" / f"{name}.wav", x)
        y = degrade.add_noise(x, degrade.white_noise(x.size, k), 10.0)
        _write(root / "sys" / "noisy" / f"{name}.wav", np.clip(y, -1, 1))
    (root / "done").write_text("")
    return root


def make_nightly(root: Path, n: int) -> Path:
    from speechqe import degrade

    if (root / "done").exists():
        return root
    clips = lj_clips(n)
    names = {c[0] for c in clips}
    lines = [l for l in (CORPORA / "ljspeech-32" / "transcripts.tsv").read_text().splitlines()
             if l.split("\t", 1)[0] in names]
    (root / "transcripts.tsv").parent.mkdir(parents=True, exist_ok=True)
    (root / "transcripts.tsv").write_text("\n".join(lines) + "\n")
    for k, (name, x) in enumerate(clips):
        _write(root / "ref" / f"{name}.wav", x)
        for night in (1, 2):
            for s, snr in enumerate((5.0, 10.0, 15.0, 20.0)):
                noise = degrade.white_noise(x.size, 10000 * night + 100 * k + s)
                y = degrade.add_noise(x, noise, snr)
                _write(root / f"night{night}" / f"sys{s}" / f"{name}.wav", np.clip(y, -1, 1))
    (root / "done").write_text("")
    return root


def corpus_sources() -> list[np.ndarray]:
    from speechqe.audio import LoadedAudio

    files = sorted((CORPORA / "librispeech-test-other-spk").glob("*/*.flac"))
    files += sorted((CORPORA / "ljspeech-32" / "wavs").glob("*.wav"))
    files += sorted((CORPORA / "librivox-5").glob("*.wav"))
    return [LoadedAudio.from_file(p).at(SR) for p in files]


def make_memory(root: Path, n: int, sources: list[np.ndarray]) -> Path:
    """``n`` items: 3 s crops of the corpus clips (at several offsets) with noise at 5-25 dB,
    each a distinct file with its own reference."""
    from speechqe import degrade

    out = root / f"n{n}"
    if (out / "done").exists():
        return out
    for k in range(n):
        src = sources[k % len(sources)]
        off = int((k // len(sources)) * 0.5 * SR) % max(1, src.size - 3 * SR)
        x = src[off: off + 3 * SR]
        x = (0.9 * x / max(np.abs(x).max(), 1e-4)).astype(np.float32)
        y = degrade.add_noise(x, degrade.white_noise(x.size, k), 5.0 + (k % 5) * 5.0)
        _write(out / "ref" / f"m{k:04d}.wav", x)
        _write(out / "sys" / "a" / f"m{k:04d}.wav", np.clip(y, -1, 1))
    (out / "done").write_text("")
    return out


def make_long(root: Path, minutes: float, sources: list[np.ndarray], single: Path) -> Path:
    """One ``minutes``-long file (and its reference) written block by block, beside four
    short items of the single-system set."""
    import soundfile as sf

    out = root / f"m{minutes:g}"
    if (out / "done").exists():
        return out
    for name in sorted(p.name for p in (single / "ref").glob("*.wav"))[:4]:
        for sub in ("ref", "sys/noisy"):
            (out / sub).mkdir(parents=True, exist_ok=True)
        shutil.copy(single / "ref" / name, out / "ref" / name)
        shutil.copy(single / "sys" / "noisy" / name, out / "sys" / "noisy" / name)
    total = int(minutes * 60 * SR)
    rng = np.random.default_rng(0)
    with sf.SoundFile(out / "ref" / "long.wav", "w", SR, 1, "PCM_16") as fr, \
            sf.SoundFile(out / "sys" / "noisy" / "long.wav", "w", SR, 1, "PCM_16") as fd:
        done, k = 0, 0
        while done < total:
            x = sources[k % len(sources)][: total - done]
            x = (0.7 * x / max(np.abs(x).max(), 1e-4)).astype(np.float32)
            fr.write(x)
            fd.write(np.clip(x + 0.05 * rng.standard_normal(x.size), -1, 1).astype(np.float32))
            done += x.size
            k += 1
    (out / "done").write_text("")
    return out


# ------------------------------------------------------------------------------------------
# Sections
# ------------------------------------------------------------------------------------------
def fresh(path: Path) -> Path:
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    return path


def section_single(out: Path, data: Path, workers: int | None) -> dict:
    runs = fresh(out / "runs" / "single")
    res: dict = {"load_before": load()}
    res["loop"] = loop(data / "sys", data / "ref", runs / "loop.json", log=runs / "loop.log")
    res["speechqe"] = speechqe(data / "sys", runs / "s.duckdb", SINGLE, data / "ref",
                               workers=workers, log=runs / "speechqe.log")
    res["warm"] = speechqe(data / "sys", runs / "s.duckdb", SINGLE, data / "ref",
                           workers=workers, log=runs / "warm.log")
    res["load_after"] = load()
    res["speedup"] = round(res["loop"]["seconds"] / res["speechqe"]["seconds"], 3)
    res["warm_fraction"] = round(res["warm"]["seconds"] / res["speechqe"]["seconds"], 4)
    res["max_abs_diff"] = compare(runs / "loop.json", runs / "s.duckdb")
    return res


def section_nightly(out: Path, data: Path, workers: int | None) -> dict:
    runs = fresh(out / "runs" / "nightly")
    text = data / "transcripts.tsv"
    res: dict = {"load_before": load()}
    res["loop"] = loop(data / "night2", data / "ref", runs / "loop.json", text=text,
                       log=runs / "loop.log")
    res["cold"] = speechqe(data / "night1", runs / "s.duckdb", NIGHTLY, data / "ref", text=text,
                           workers=workers, log=runs / "night1.log")
    res["refs_analysed"] = speechqe(data / "night2", runs / "s.duckdb", NIGHTLY, data / "ref",
                                    text=text, workers=workers, log=runs / "night2.log")
    res["load_after"] = load()
    res["speedup_cold"] = round(res["loop"]["seconds"] / res["cold"]["seconds"], 3)
    res["speedup_refs_analysed"] = round(res["loop"]["seconds"] / res["refs_analysed"]["seconds"], 3)
    res["max_abs_diff"] = compare(runs / "loop.json", runs / "s.duckdb")
    return res


def section_memory(out: Path, sizes: list[int], workers: int | None) -> dict:
    runs = fresh(out / "runs" / "memory")
    sources = corpus_sources()
    res: dict = {"load_before": load(), "metrics": MEMORY}
    for n in sizes:
        d = make_memory(out / "data" / "memory", n, sources)
        res[str(n)] = speechqe(d / "sys", runs / f"n{n}.duckdb", MEMORY, d / "ref",
                               workers=workers, log=runs / f"n{n}.log")
    res["load_after"] = load()
    a, b = str(sizes[-2]), str(sizes[-1])
    res["ratio_rss"] = round(res[b]["peak_rss_gb"] / res[a]["peak_rss_gb"], 3)
    return res


def section_long(out: Path, minutes: float, single: Path, workers: int | None) -> dict:
    from speechqe.store import Store

    runs = fresh(out / "runs" / "long")
    d = make_long(out / "data" / "long", minutes, corpus_sources(), single)
    res: dict = {"minutes": minutes, "load_before": load()}
    res["speechqe"] = speechqe(d / "sys", runs / "s.duckdb", SINGLE, d / "ref", workers=workers,
                               log=runs / "speechqe.log")
    res["load_after"] = load()
    with Store(runs / "s.duckdb", read_only=True) as st:
        rows = st.results(st.run("latest")["run_id"])
    longs = [r for r in rows if r["item_id"].endswith("/long")]
    res["long_outcome"] = {r["metric"]: (r["status"], r["error_type"] or round(r["value"], 4))
                           for r in longs}
    short = [r for r in rows if not r["item_id"].endswith("/long")]
    res["short_items_ok"] = f"{sum(r['status'] == 'ok' for r in short)}/{len(short)} records"
    return res


def machine() -> dict:
    import psutil

    cpu = "?"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": len(os.sched_getaffinity(0)),
            "ram_gb": round(psutil.virtual_memory().total / 2**30, 1),
            "python": platform.python_version(), "omp_threads": os.environ.get("OMP_NUM_THREADS"),
            "nice": os.nice(0)}


def report(r: dict) -> str:
    out = [f"machine: {r['machine']}", ""]
    if "single" in r:
        s = r["single"]
        out += [
            f"## single system (load {s['load_before']} -> {s['load_after']})",
            "| run | wall s | vs loop | CPU s | peak RSS GB (tree / largest process) |",
            "| --- | --- | --- | --- | --- |",
            f"| per-file loop | {s['loop']['seconds']} | 1.00x | {s['loop']['cpu_seconds']} | "
            f"{s['loop']['peak_rss_gb']} / {s['loop']['peak_process_rss_gb']} |",
            f"| speechqe score | {s['speechqe']['seconds']} | {s['speedup']}x | "
            f"{s['speechqe']['cpu_seconds']} | "
            f"{s['speechqe']['peak_rss_gb']} / {s['speechqe']['peak_process_rss_gb']} |",
            f"| warm rerun | {s['warm']['seconds']} | {100 * s['warm_fraction']:.1f}% of cold | "
            f"{s['warm']['cpu_seconds']} | "
            f"{s['warm']['peak_rss_gb']} / {s['warm']['peak_process_rss_gb']} |",
            "max |loop - speechqe|: " + ", ".join(f"{k} {v:.1e}" for k, v in s["max_abs_diff"].items()),
            "",
        ]
    if "nightly" in r:
        s = r["nightly"]
        out += [
            f"## nightly layout (load {s['load_before']} -> {s['load_after']})",
            "| run | wall s | vs loop | CPU s | peak RSS GB |", "| --- | --- | --- | --- | --- |",
            f"| per-file loop (night 2) | {s['loop']['seconds']} | 1.00x | "
            f"{s['loop']['cpu_seconds']} | {s['loop']['peak_rss_gb']} |",
            f"| speechqe, night 1 (cold) | {s['cold']['seconds']} | {s['speedup_cold']}x | "
            f"{s['cold']['cpu_seconds']} | {s['cold']['peak_rss_gb']} |",
            f"| speechqe, night 2 (references analysed) | {s['refs_analysed']['seconds']} | "
            f"{s['speedup_refs_analysed']}x | {s['refs_analysed']['cpu_seconds']} | "
            f"{s['refs_analysed']['peak_rss_gb']} |",
            "max |loop - speechqe|: " + ", ".join(f"{k} {v:.1e}" for k, v in s["max_abs_diff"].items()),
            "",
        ]
    if "memory" in r:
        s = r["memory"]
        sizes = [k for k in s if k.isdigit()]
        out += [f"## memory (load {s['load_before']} -> {s['load_after']}; {', '.join(s['metrics'])})",
                "| items | wall s | CPU s | peak RSS GB (tree / largest process) |",
                "| --- | --- | --- | --- |"]
        out += [f"| {n} | {s[n]['seconds']} | {s[n]['cpu_seconds']} | {s[n]['peak_rss_gb']} / "
                f"{s[n]['peak_process_rss_gb']} |" for n in sizes]
        out += [f"peak RSS {sizes[-1]} / {sizes[-2]}: {s['ratio_rss']}", ""]
    if "long" in r:
        s = r["long"]
        out += [f"## long file: {s['minutes']} min (load {s['load_before']} -> {s['load_after']})",
                f"wall {s['speechqe']['seconds']} s, CPU {s['speechqe']['cpu_seconds']} s, "
                f"peak RSS {s['speechqe']['peak_rss_gb']} GB "
                f"(largest process {s['speechqe']['peak_process_rss_gb']} GB); "
                f"short items: {s['short_items_ok']}",
                f"long file: {s['long_outcome']}", ""]
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a few items per section (a check)")
    ap.add_argument("--out", type=Path, default=ROOT / "bench-out" / "throughput")
    ap.add_argument("--only", default="single,warm,nightly,memory,long")
    ap.add_argument("--workers", type=int, default=None, help="default: speechqe's (auto)")
    ap.add_argument("--long-minutes", type=float, default=None)
    args = ap.parse_args()
    only = set(args.only.split(","))
    q = args.quick
    out = args.out / ("quick" if q else "full")
    n_single, n_night = (10, 4) if q else (32, 32)  # 10 clips: 67 s, enough for the pool
    sizes = [20, 50, 100] if q else [50, 200, 1000]
    minutes = args.long_minutes or (10.5 if q else 120.0)
    res: dict = {"machine": machine(), "quick": q, "command": " ".join(sys.argv)}
    single = make_single(out / "data" / "single", n_single)
    if only & {"single", "warm"}:
        res["single"] = section_single(out, single, args.workers)
    if "nightly" in only:
        res["nightly"] = section_nightly(out, make_nightly(out / "data" / "nightly", n_night),
                                         args.workers)
    if "memory" in only:
        res["memory"] = section_memory(out, sizes, args.workers)
    if "long" in only:
        res["long"] = section_long(out, minutes, single, args.workers)
    (out / "results.json").write_text(json.dumps(res, indent=1))
    text = report(res)
    (out / "results.md").write_text(text)
    print(text)
    bad = []
    for key in ("single", "nightly"):
        for metric, d in res.get(key, {}).get("max_abs_diff", {}).items():
            if metric in EXACT and not d <= 1e-6:
                bad.append(f"{key}: {metric} differs from the loop by {d:.2e}")
    if bad:
        raise SystemExit("values differ:\n" + "\n".join(bad))


if __name__ == "__main__":
    main()
