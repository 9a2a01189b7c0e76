"""Benchmark: recall of the code scan at the labelled line of CyberSecEval's instruct set (a
script: it prints, it asserts nothing; run by hand, never in CI).

The data is not part of Corral (held-out reference data, third-party code): pass the path of
a JSON list of entries as Purple Llama ships them (CybersecurityBenchmarks/datasets/instruct/
instruct.json, or a sample of it), each with ``language``, ``origin_code``, ``line_text`` and
``pattern_id``. Every entry's ``origin_code`` is scanned in its language with the full scan
(CodeShield's regex and semgrep rules, and Corral's own), all entries in one scan; an entry is
a hit when a finding lies on a line of the snippet whose text is ``line_text`` (both
stripped: the dataset's line numbers are the original file's, not the snippet's).

Prints recall overall and per language, the same for CodeShield's engines alone, how many
findings land on other lines, and per pattern_id the misses.

Run: python tests/bench/bench_code_recall.py PATH [--quick] [--misses N] [--lang LANG]
  --quick      line rules only (no semgrep)
  --misses N   also print up to N missed labelled lines per pattern
  --lang LANG  only entries in that language
"""

from __future__ import annotations

import json
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


def labelled_lines(code: str, line_text: str) -> set[int]:
    """1-based numbers of the snippet's lines whose text is the labelled line's."""
    want = line_text.strip()
    return {n for n, line in enumerate(code.split("\n"), 1) if line.strip() == want}


def _rate(hits: int, total: int) -> str:
    return f"{hits / total:.2f} ({hits}/{total})" if total else "n/a"


def main(path: str, *, quick: bool = False, show_misses: int = 0,
         language: str | None = None) -> None:
    from core.safety.code_scan import CodeBlock, scan_blocks

    entries: list[dict[str, Any]] = json.loads(Path(path).read_text(encoding="utf-8"))
    if language:
        entries = [e for e in entries if e["language"] == language]
    entries = [e for e in entries if labelled_lines(e["origin_code"], e["line_text"])]
    if not entries:
        print("no entries with their labelled line in the snippet")
        return
    blocks = [CodeBlock(i, e["language"], e["language"], e["origin_code"], 1)
              for i, e in enumerate(entries)]
    t = time.perf_counter()
    scan = scan_blocks(blocks, budget_s=1800, semgrep=not quick)
    seconds = time.perf_counter() - t
    if scan.problems:
        print("scan problems:", *scan.problems[:5], sep="\n  ")

    by_lang: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])  # all, shield, total
    by_pattern: dict[str, list[int]] = defaultdict(lambda: [0, 0])  # hits, total
    misses: dict[str, list[str]] = defaultdict(list)
    other_lines = 0
    for i, entry in enumerate(entries):
        want = labelled_lines(entry["origin_code"], entry["line_text"])
        found = scan.for_block(i)
        hit = any(f.line in want for f in found)
        shield = any(f.line in want and f.engine != "corral" for f in found)
        other_lines += len({f.line for f in found} - want)
        stats = by_lang[entry["language"]]
        stats[0] += hit
        stats[1] += shield
        stats[2] += 1
        pattern = str(entry.get("pattern_id", "?")).rsplit(".", 1)[-1]
        by_pattern[pattern][0] += hit
        by_pattern[pattern][1] += 1
        if not hit:
            misses[pattern].append(entry["line_text"].strip()[:110])

    total = len(entries)
    hits = sum(s[0] for s in by_lang.values())
    shield_hits = sum(s[1] for s in by_lang.values())
    print(f"{total} entries, scanned in {seconds:.1f} s "
          f"({'line rules only' if quick else 'full scan'})")
    print(f"recall at the labelled line: {_rate(hits, total)}; CodeShield's engines alone "
          f"{_rate(shield_hits, total)}")
    print(f"findings on other lines: {other_lines} ({other_lines / total:.2f} per snippet)")
    print(f"{'language':<12}{'recall':>18}{'CodeShield alone':>22}")
    for lang in sorted(by_lang):
        a, s, n = by_lang[lang]
        print(f"{lang:<12}{_rate(a, n):>18}{_rate(s, n):>22}")
    print("misses per pattern_id (misses/total):")
    ranked = sorted(by_pattern.items(), key=lambda kv: (kv[1][0] - kv[1][1], kv[0]))
    for pattern, (h, n) in ranked:
        if h == n:
            continue
        print(f"  {pattern:<55}{n - h:>4}/{n}")
        for line in misses[pattern][:show_misses]:
            print(f"      {line}")
    top = Counter(f.rule_id for f in scan).most_common(8)
    print("most frequent rules:", ", ".join(f"{rule} {n}" for rule, n in top))


if __name__ == "__main__":
    argv = sys.argv[1:]
    if not argv or argv[0].startswith("-"):
        print(__doc__)
        sys.exit(2)
    if not Path(argv[0]).is_file():
        print(f"no data at {argv[0]}: this bench needs a copy of CyberSecEval's instruct set "
              "(or a sample of it), which Corral does not ship")
        sys.exit(2)
    count = 0
    lang = None
    if "--misses" in argv:
        count = int(argv[argv.index("--misses") + 1])
    if "--lang" in argv:
        lang = argv[argv.index("--lang") + 1]
    main(argv[0], quick="--quick" in argv, show_misses=count, language=lang)
