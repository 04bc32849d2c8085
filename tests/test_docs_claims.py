"""Claims of the documentation that the code can check (they drifted apart before)."""

from __future__ import annotations

import re

from conftest import REPO


def test_assets_doc_names_exactly_the_assets_pinned_at_first_use():
    from speechqe import assets

    unpinned = sorted(n for n, a in assets.catalogue().items()
                      if any(f.sha256 is None for f in a.files))
    doc = " ".join((REPO / "docs" / "assets.md").read_text().split())
    claim = re.search(r"(\w+) shipped assets rely on this today(.*?)\. The first machine", doc)
    assert claim, "docs/assets.md no longer says which assets are pinned at first use"
    words = {"no": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6,
             "seven": 7, "eight": 8, "nine": 9, "ten": 10}
    assert words[claim.group(1).lower()] == len(unpinned)
    named = sorted(set(re.findall(r"`([a-z0-9][a-z0-9.+-]*)`", claim.group(2))) - {"mos.yaml", "ssl.yaml"})
    assert named == unpinned
