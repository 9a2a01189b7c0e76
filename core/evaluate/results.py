"""What an evaluation found: one row of scores and costs per contestant, a recommendation
with its reason, CSV export, and the last run stored with the knowledge base."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import asdict, dataclass, field, fields
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from core.rag.knowledge_base import KnowledgeBase

LAST_KEY = "evaluate.last"
TUNE_KEY = "evaluate.tune"
#: a contestant this close to the best nDCG@10 and this much faster is recommended instead
CLOSE, FASTER = 0.01, 1.5


@dataclass
class Score:
    name: str
    kind: str  # "embedder" or "baseline"
    ndcg_at_10: float | None = None
    recall_at_10: float | None = None
    mrr_at_10: float | None = None
    v_measure: float | None = None
    pair_ap: float | None = None
    sts_spearman: float | None = None
    rerank_map: float | None = None
    dimensions: int | None = None
    max_tokens: int | None = None
    index_bytes: int = 0
    chunks_per_s: float = 0.0
    query_ms: float = 0.0
    error: str = ""  # why this contestant could not be measured


#: (field, column title) of the table, the CSV and the tab
COLUMNS: list[tuple[str, str]] = [
    ("name", "Embedder"), ("ndcg_at_10", "nDCG@10"), ("recall_at_10", "Recall@10"),
    ("mrr_at_10", "MRR@10"), ("v_measure", "V-measure"), ("pair_ap", "Pair AP"),
    ("sts_spearman", "STS Spearman"), ("rerank_map", "Rerank MAP@20"),
    ("dimensions", "Dimensions"), ("max_tokens", "Max tokens"), ("index_bytes", "Index bytes"),
    ("chunks_per_s", "Chunks/s"), ("query_ms", "Query ms"), ("error", "Error"),
]


@dataclass
class EvaluationResult:
    kb: str
    created: float
    seed: int
    documents: int
    chunks: int
    queries: int
    labelled_queries: int
    sts_pairs: int
    scores: list[Score] = field(default_factory=list)
    recommendation: str = ""
    reason: str = ""
    notes: list[str] = field(default_factory=list)
    elapsed_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> EvaluationResult:
        names = {f.name for f in fields(Score)}
        scores = [Score(**{k: v for k, v in s.items() if k in names}) for s in raw["scores"]]
        own = {f.name for f in fields(cls)} - {"scores"}
        return cls(**{k: v for k, v in raw.items() if k in own}, scores=scores)

    def score(self, name: str) -> Score:
        return next(s for s in self.scores if s.name == name)

    def to_csv(self) -> str:
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow([title for _f, title in COLUMNS])
        for s in self.scores:
            writer.writerow([cell(getattr(s, f)) for f, _t in COLUMNS])
        return out.getvalue()


def cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 10 else f"{value:.1f}"
    return str(value)


def recommend(scores: list[Score]) -> tuple[str, str]:
    """The contestant to use and why ("it ..."): the best nDCG@10, unless one within CLOSE
    of it embeds at least FASTER times as fast."""
    ok = [s for s in scores if not s.error and s.ndcg_at_10 is not None and s.name != "random"]
    if not ok:
        return "", "no contestant could be measured"
    ranked = sorted(ok, key=lambda s: -(s.ndcg_at_10 or 0.0))
    best = ranked[0]
    best_ndcg = best.ndcg_at_10 or 0.0
    quick = [s for s in ok if best_ndcg - (s.ndcg_at_10 or 0.0) <= CLOSE
             and s.chunks_per_s >= FASTER * best.chunks_per_s > 0]
    if quick:
        pick = max(quick, key=lambda s: s.chunks_per_s)
        return pick.name, (
            f"it scores nDCG@10 {pick.ndcg_at_10:.3f}, within {CLOSE} of the best "
            f"({best.name}, {best_ndcg:.3f}), and embeds "
            f"{pick.chunks_per_s / best.chunks_per_s:.1f}x as fast")
    runner = f"; the next best, {ranked[1].name}, scores {ranked[1].ndcg_at_10:.3f}" \
        if len(ranked) > 1 else ""
    reason = f"it finds your sentences best (nDCG@10 {best_ndcg:.3f}){runner}"
    if best.kind == "baseline":
        reason += ("; keyword search beats the embedders here, so raise the knowledge "
                   "base's keyword weight (the Tune tab or the Search tab's “keywords”; "
                   "corral evaluate tune or corral kb set NAME --hybrid-weight W)")
    return best.name, reason


def save_last(kb: KnowledgeBase, result: EvaluationResult) -> None:
    kb.catalogue.set_value(LAST_KEY, json.dumps(result.to_dict()))


def load_last(kb: KnowledgeBase) -> EvaluationResult | None:
    """The knowledge base's last stored evaluation, or None (also for one unreadable)."""
    text = kb.catalogue.get_value(LAST_KEY)
    if not text:
        return None
    try:
        return EvaluationResult.from_dict(json.loads(text))
    except (ValueError, TypeError, KeyError):
        return None
