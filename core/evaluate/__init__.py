"""MTEB-style evaluation of embedders on a knowledge base's own documents, and the
successive-halving search of its retrieval settings (chunk size, overlap, embedder, hybrid
weight, top-k).

``dataset`` builds the evaluation set (known-item queries, labelled queries, STS pairs) and
``questions`` adds questions a chat model writes; ``contestants`` turns embedder names and
the baselines into scorers; ``metrics`` holds the fixed task definitions; ``run`` evaluates
and ``results`` reports and stores; ``tune`` searches and ``tune_kb`` applies it to a
knowledge base.
"""
