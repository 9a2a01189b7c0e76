"""`corral lab ...`: the embedding lab headless: word2vec, GloVe, co-occurrence counts,
stemming vs lemmatization, mean pooling and an embedding-layer classifier, each with --json."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from core.cli._common import ProgressBar, add_json_flag, load_settings, print_json

HELP = "word vectors, GloVe, stemming, pooling and a classifier on your own text"
PRESETS = ("cat-dog", "families", "news")  # as core.lab.corpus.PRESETS, without importing it
POS = ("adj", "noun", "verb", "adv")


def _source(p: argparse.ArgumentParser, default: str) -> None:
    group = p.add_mutually_exclusive_group()
    group.add_argument("--preset", choices=PRESETS, help=f"a built-in text (default {default})")
    group.add_argument("--file", metavar="PATH", help="a UTF-8 text file")
    group.add_argument("--kb", metavar="NAME", help="the chunks of a knowledge base")
    p.set_defaults(default_preset=default)


def _training(p: argparse.ArgumentParser, *, dim: int, window: int, epochs: int) -> None:
    p.add_argument("--dim", type=int, default=dim, help=f"dimensions (default {dim})")
    p.add_argument("--window", type=int, default=window, help=f"context window in words (default {window})")
    p.add_argument("--min-count", type=int, default=1, help="leave out rarer words (default 1)")
    p.add_argument("--epochs", type=int, default=epochs, help=f"passes over the text (default {epochs})")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--nearest", action="append", default=[], metavar="WORD",
                   help="show the words nearest to WORD (repeatable)")
    p.add_argument("--analogy", nargs=3, metavar=("A", "B", "C"), help="words nearest to A - B + C")
    p.add_argument("--dims", metavar="N,N,...",
                   help="dimension experiment: train at each size, with a quality score and the time")
    add_json_flag(p)


def configure(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="step", required=True, metavar="STEP")
    p = sub.add_parser("word2vec", help="train word2vec (CBOW or skip-gram) with gensim")
    _source(p, "families")
    p.add_argument("--arch", choices=("cbow", "skipgram"), default="cbow")
    p.add_argument("--workers", type=int, default=1, help="threads (1 gives the same vectors each run)")
    _training(p, dim=50, window=5, epochs=20)
    p = sub.add_parser("glove", help="train GloVe (weighted least squares with AdaGrad)")
    _source(p, "families")
    _training(p, dim=50, window=10, epochs=25)
    p = sub.add_parser("cooccur", help="the co-occurrence matrix (1/distance weights)")
    _source(p, "cat-dog")
    p.add_argument("--window", type=int, default=10)
    p.add_argument("--min-count", type=int, default=1)
    p.add_argument("--limit", type=int, default=12, help="show the most frequent words (default 12)")
    add_json_flag(p)
    p = sub.add_parser("stem", help="each word's stem and lemma side by side")
    p.add_argument("words", nargs="*", metavar="WORD")
    p.add_argument("--pos", choices=POS, help="part of speech for the lemma (default: best guess)")
    p.add_argument("--kb", metavar="NAME",
                   help="also measure keyword recall with and without stemming on this knowledge base")
    p.add_argument("--queries", type=int, default=100, help="generated queries for --kb (default 100)")
    p.add_argument("-k", type=int, default=5, help="recall at k for --kb (default 5)")
    add_json_flag(p)
    p = sub.add_parser("pooling", help="mean pooling step by step with MiniLM, or one word in contexts")
    p.add_argument("sentences", nargs="+", metavar="SENTENCE")
    p.add_argument("--word", help="compare this word's vectors across the sentences instead")
    add_json_flag(p)
    p = sub.add_parser("classify", help="embedding-layer classifier vs logistic regression on MiniLM")
    p.add_argument("--csv", metavar="PATH", help="labelled sentences: text,label (default: a toy set)")
    p.add_argument("--dim", type=int, default=16)
    p.add_argument("--epochs", type=int, default=60)
    p.add_argument("--test-share", type=float, default=0.25)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-minilm", action="store_true", help="train the embedding layer only")
    add_json_flag(p)


def run(args: argparse.Namespace) -> int:
    step: str = args.step
    handler = {"word2vec": _vectors, "glove": _vectors, "cooccur": _cooccur, "stem": _stem,
               "pooling": _pooling, "classify": _classify}[step]
    return handler(args)


def _text(args: argparse.Namespace) -> Any:
    from core.lab import corpus

    if args.kb:
        return corpus.load("kb", args.kb, settings=load_settings())
    if args.file:
        return corpus.load("file", args.file)
    return corpus.load("preset", args.preset or args.default_preset)


def _bar(label: str) -> ProgressBar:
    return ProgressBar(label)


def _vectors(args: argparse.Namespace) -> int:
    from core.errors import CorralError
    from core.lab.evaluate import dimension_experiment, quality, trainer
    from core.lab.vectors import analogy, nearest

    text = _text(args)
    method = args.arch if args.step == "word2vec" else "glove"
    params: dict[str, Any] = {"window": args.window, "min_count": args.min_count,
                              "epochs": args.epochs, "seed": args.seed}
    if args.step == "word2vec":
        params["workers"] = args.workers
    bar = _bar(method)
    if args.dims:
        try:
            dims = [int(x) for x in args.dims.split(",") if x.strip()]
        except ValueError:
            raise CorralError(f"--dims takes numbers separated by commas, not {args.dims!r}") from None
        rows = dimension_experiment(text.sentences, dims, method, progress=bar.update, **params)
        bar.close()
        if args.json:
            print_json({"text": text.name, "method": method, "rows": [r.to_dict() for r in rows]})
            return 0
        print(f"{method} on {text.name} ({text.tokens:,} words)")
        print(f"{'dims':>6} {'seconds':>9} {'wordsim ρ':>10} {'pairs':>7} {'analogies':>10} {'asked':>7}")
        for r in rows:
            q = r.quality
            rho = "-" if q.wordsim_spearman is None else f"{q.wordsim_spearman:.3f}"
            acc = "-" if q.analogy_accuracy is None else f"{q.analogy_accuracy:.3f}"
            print(f"{r.dimension:>6} {r.seconds:>9.3f} {rho:>10} {q.wordsim_pairs:>7} {acc:>10} "
                  f"{q.analogy_questions:>7}")
        return 0
    tv = trainer(method)(text.sentences, dim=args.dim, progress=bar.update, **params)
    bar.close()
    near = {w: nearest(tv, w) for w in args.nearest}
    found = analogy(tv, *args.analogy) if args.analogy else None
    score = quality(tv)
    if args.json:
        print_json({"text": text.name, **tv.summary(), "quality": score.to_dict(),
                    "nearest": {w: [{"word": x, "cosine": s} for x, s in v] for w, v in near.items()},
                    "analogy": None if found is None else {
                        "a": args.analogy[0], "b": args.analogy[1], "c": args.analogy[2],
                        "answers": [{"word": x, "cosine": s} for x, s in found]}})
        return 0
    print(f"{method} on {text.name}: {len(tv.keyed):,} words, {tv.dimension} dimensions, "
          f"{tv.epochs} epochs in {tv.seconds:.2f} s")
    if tv.losses:
        print(f"cost per epoch: {tv.losses[0]:.4f} -> {tv.losses[-1]:.4f}")
    cov = f"{score.wordsim_pairs} of {score.wordsim_total} wordsim353 pairs, " \
          f"{score.analogy_questions} of {score.analogy_total} analogies covered"
    print(f"quality: {'-' if score.score is None else f'{score.score:.3f}'} ({cov})")
    for w, v in near.items():
        print(f"nearest to {w}: " + ", ".join(f"{x} {s:.3f}" for x, s in v))
    if found is not None:
        a, b, c = args.analogy
        print(f"{a} - {b} + {c}: " + ", ".join(f"{x} {s:.3f}" for x, s in found))
    return 0


def _cooccur(args: argparse.Namespace) -> int:
    from core.lab.cooccur import cooccurrence, vocabulary

    text = _text(args)
    vocab = vocabulary(text.sentences, args.min_count)
    matrix = cooccurrence(text.sentences, vocab, args.window)
    n = min(max(args.limit, 1), len(vocab))
    shown = matrix[:n, :n].toarray()
    if args.json:
        print_json({"text": text.name, "window": args.window, "vocabulary": len(vocab),
                    "nonzeros": int(matrix.nnz), "words": vocab.words[:n],
                    "counts": vocab.counts[:n].tolist(), "matrix": shown.round(6).tolist()})
        return 0
    print(f"co-occurrence on {text.name}: {len(vocab)} words, {matrix.nnz:,} nonzero cells, "
          f"window {args.window}, weights 1/distance")
    width = max(6, *(len(w) for w in vocab.words[:n]))
    print(" " * width + "".join(f"{w[:7]:>8}" for w in vocab.words[:n]))
    for w, row in zip(vocab.words[:n], shown, strict=True):
        print(f"{w:<{width}}" + "".join(f"{v:>8.2f}" if v else f"{'.':>8}" for v in row))
    return 0


def _stem(args: argparse.Namespace) -> int:
    from core.errors import CorralError
    from core.lab.stemming import keyword_recall, stem_and_lemma

    if not args.words and not args.kb:
        raise CorralError("give one or more words, or --kb NAME")
    rows = stem_and_lemma(args.words, args.pos) if args.words else []
    recall = None
    if args.kb:
        from core.lab.corpus import kb_chunks

        bar = _bar("recall")
        recall = keyword_recall(kb_chunks(args.kb, settings=load_settings()), queries=args.queries,
                                k=args.k, progress=bar.update)
        bar.close()
    if args.json:
        out = [{"word": r.word, "stem": r.stem, "lemma": r.lemma} for r in rows]
        print_json(out if recall is None else {"words": out, "recall": recall.to_dict()})
        return 0
    if rows:
        width = max(4, *(len(r.word) for r in rows))
        swidth = max(4, *(len(r.stem) for r in rows))
        print(f"{'word':<{width}}  {'stem':<{swidth}}  lemma" + (f" ({args.pos})" if args.pos else ""))
        for r in rows:
            print(f"{r.word:<{width}}  {r.stem:<{swidth}}  {r.lemma}")
    if recall is not None:
        print(f"keyword recall@{recall.k} on {len(recall.queries)} generated queries: "
              f"{recall.plain_recall:.1%} plain, {recall.stemmed_recall:.1%} stemmed")
    return 0


def _pooling(args: argparse.Namespace) -> int:
    import numpy as np

    from core.lab.contextual import context_table, pooling_steps

    if args.word:
        table = context_table(args.word, args.sentences)
        if args.json:
            print_json(table.to_dict())
            return 0
        print(f"cosine of '{args.word}' in each pair of sentences (MiniLM token outputs; "
              "a static model such as word2vec gives 1.000 everywhere)")
        for n, s in enumerate(table.sentences, 1):
            print(f"  [{n}] {s}")
        for n, row in enumerate(table.contextual, 1):
            print(f"[{n}] " + " ".join(f"{v:.3f}" for v in row))
        return 0
    steps = pooling_steps(args.sentences)
    if args.json:
        print_json(steps.to_dict())
        return 0
    for n, s in enumerate(steps.sentences):
        mask = steps.mask[n]
        real = [t for t, m in zip(steps.tokens[n], mask, strict=True) if m]
        print(f"{s}")
        print(f"  1. tokens: {' '.join(steps.tokens[n])}  ({steps.token_vectors.shape[2]} numbers each)")
        print(f"  2. attention mask: {''.join(str(int(m)) for m in mask)}  ({len(real)} real tokens)")
        print(f"  3. mean of the real tokens' vectors: length {np.linalg.norm(steps.mean[n]):.4f}")
        print(f"  4. normalised: {np.round(steps.normalised[n, :4], 4).tolist()} ...")
        print(f"     sentence-transformers: {np.round(steps.library[n, :4], 4).tolist()} ..."
              f"  cosine {steps.cosine[n]:.6f}")
    return 0


def _classify(args: argparse.Namespace) -> int:
    from pathlib import Path

    from core.lab.classify import compare, read_labelled_csv, toy_sentiment

    if args.csv:
        texts, labels, classes = read_labelled_csv(Path(args.csv).expanduser())
    else:
        texts, labels = toy_sentiment(args.seed)
        classes = ["negative", "positive"]
    bar = _bar("classify")
    result = compare(texts, labels, classes=classes, test_share=args.test_share, seed=args.seed,
                     dim=args.dim, epochs=args.epochs, with_minilm=not args.no_minilm,
                     progress=bar.update)
    bar.close()
    if args.json:
        print_json(result.to_dict())
        return 0
    print(f"{result.train_size} sentences to train on, {result.test_size} to test "
          f"(classes: {result.classes[0]}, {result.classes[1]})")
    for side in (result.embedding, result.minilm):
        if side is None:
            continue
        (tn, fp), (fn, tp) = side.confusion
        sys.stdout.write(
            f"\n{side.name}: accuracy {side.accuracy:.1%} ({side.seconds:.2f} s)\n"
            f"{'':>12}{'predicted ' + result.classes[0]:>22}{'predicted ' + result.classes[1]:>22}\n"
            f"{result.classes[0]:>12}{tn:>22}{fp:>22}\n{result.classes[1]:>12}{fn:>22}{tp:>22}\n")
    return 0
