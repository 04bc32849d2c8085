"""Generate the embedded demo speech set (committed beside this script).

Ten Harvard sentences (IEEE 1969 phonetically balanced list) are spoken by Flite's ``slt``
voice (Debian package ``flite``; CMU ARCTIC SLT, a clusergen voice that Whisper tiny.en
transcribes at ~11% WER, where espeak-ng's formant voice gave ~28%), resampled to 16 kHz and
peak-normalised: these are the clean references. Three "systems" are degraded copies, aligned sample for sample with the references
so every intrusive metric applies:

* ``sys_a``: light white noise at 30 dB SNR (close to clean);
* ``sys_b``: four-talker babble made of the *other* sentences at 5 dB SNR;
* ``sys_c``: telephone-like chain: 3.4 kHz low-pass, 8-bit mu-law, hard clipping at 40% of peak.

Usage (from the repository root)::

    .venv/bin/python data/samples/make_samples.py

Output: ``reference/hNN.flac``, ``systems/<sys>/hNN.flac``, ``transcripts.tsv``. Deterministic
for a given Flite version (2.2 was used for the committed files).
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf

from speechqe import degrade
from speechqe.audio import read, resample

SENTENCES = [
    "The birch canoe slid on the smooth planks.",
    "Glue the sheet to the dark blue background.",
    "It's easy to tell the depth of a well.",
    "These days a chicken leg is a rare dish.",
    "Rice is often served in round bowls.",
    "The juice of lemons makes fine punch.",
    "The box was thrown beside the parked truck.",
    "The hogs were fed chopped corn and garbage.",
    "Four hours of steady work faced us.",
    "A large size in stockings is hard to sell.",
]
RATE = 16000
HERE = Path(__file__).resolve().parent


def speak(text: str, voice: str = "slt") -> np.ndarray:
    exe = shutil.which("flite")
    if exe is None:
        raise SystemExit("flite is not installed: apt-get install flite")
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "out.wav"
        subprocess.run([exe, "-voice", voice, "-t", text, "-o", str(wav)], check=True)
        x, sr = read(wav)
    x = resample(x, sr, RATE)
    # trim leading/trailing silence to 100 ms
    active = np.flatnonzero(np.abs(x) > 1e-3)
    x = x[max(0, active[0] - 1600) : active[-1] + 1600]
    return degrade.normalise_peak(x, 0.8)


def main() -> None:
    refs = [speak(s) for s in SENTENCES]
    ids = [f"h{k + 1:02d}" for k in range(len(SENTENCES))]
    out_ref = HERE / "reference"
    out_sys = HERE / "systems"
    for d in (out_ref, out_sys):
        if d.exists():
            shutil.rmtree(d)
    out_ref.mkdir(parents=True)
    systems = {
        "sys_a": lambda k, x: degrade.add_noise(x, degrade.white_noise(x.size, seed=k), 30.0),
        "sys_b": lambda k, x: degrade.add_noise(
            x,
            degrade.babble([r for j, r in enumerate(refs) if j != k][:4], x.size, seed=k),
            5.0,
        ),
        "sys_c": lambda k, x: degrade.hard_clip(
            degrade.mu_law(degrade.band_limit(x, RATE, 3400.0), bits=8), 0.4
        ),
    }
    for k, (uid, x) in enumerate(zip(ids, refs)):
        sf.write(out_ref / f"{uid}.flac", x, RATE, subtype="PCM_16")
        for name, fn in systems.items():
            d = out_sys / name
            d.mkdir(parents=True, exist_ok=True)
            y = np.clip(fn(k, x), -1.0, 1.0)
            sf.write(d / f"{uid}.flac", y, RATE, subtype="PCM_16")
    with open(HERE / "transcripts.tsv", "w", encoding="utf-8") as f:
        f.write("id\ttext\n")
        for uid, s in zip(ids, SENTENCES):
            f.write(f"{uid}\t{s}\n")
    total = sum(p.stat().st_size for p in HERE.rglob("*.flac"))
    print(f"wrote {len(ids)} references and {len(systems)} systems, {total / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
