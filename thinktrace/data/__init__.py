"""The human annotations: the spec's `data` section (config), the source formats (formats), where files come from
(sources: paths, package data, Hugging Face datasets) and the corpus they load into (corpus: items, splits,
aggregation). `from thinktrace.data import DataConfig, Corpus, Item, load_corpus` is the public surface."""

from thinktrace.data.config import SPLITS, ColumnsConfig, DataConfig, SplitConfig
from thinktrace.data.corpus import Corpus, Item, load_corpus

__all__ = ["SPLITS", "ColumnsConfig", "Corpus", "DataConfig", "Item", "SplitConfig", "load_corpus"]
