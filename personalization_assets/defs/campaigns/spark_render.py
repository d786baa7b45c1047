"""Rendering across Spark executors with `mapInPandas` (`PERSONALIZATION_ENGINE=spark`).

:class:`SparkEmailRenderer` has :class:`EmailRenderer`'s ``render_many`` and nothing else, so
``payloads.render_payloads`` takes it in place of the local renderer and keeps everything else
(content keys, reuse, the table and the JSONL files) on the driver. Each call ships one
template's contexts to the executors, pickled (the exact Python values, so Decimals, dates and
None stay what they are); every executor builds the same sandboxed ``EmailRenderer`` from the
same ``RendererConfig`` (once per Python worker, then reused) and renders its share; the results
(``RenderedEmail`` or ``TemplateRenderError`` values, pickled) come back to the driver in the
order of the contexts. The output is therefore byte-identical to rendering in one process.

Templates: executors read the configured templates folder when they can see it (the local
cluster shares this file system). The folder's files also travel with every job (a few dozen
KB); an executor on another machine writes them to a local folder once and renders from there.
"""

from __future__ import annotations

import hashlib
import pickle
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from personalization_assets.defs.campaigns.rendering import (
    EmailRenderer,
    RenderedEmail,
    RendererConfig,
    TemplateRenderError,
)

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

ROWS_PER_PARTITION = 2_000
_RENDERERS: dict[bytes, EmailRenderer] = {}  # per executor Python worker, by config + files


class SparkEmailRenderer:
    """``render_many`` on a Spark cluster: same inputs, same results as ``EmailRenderer``."""

    def __init__(
        self,
        spark: SparkSession,
        config: RendererConfig,
        *,
        min_partitions: int = 2,
        rows_per_partition: int = ROWS_PER_PARTITION,
    ) -> None:
        self.spark = spark
        self.config = config
        self.min_partitions = min_partitions
        self.rows_per_partition = rows_per_partition
        self.jobs = 0
        root = Path(config.templates_dir).resolve()
        self._templates = {
            path.relative_to(root).as_posix(): path.read_bytes()
            for path in sorted(root.rglob("*"))
            if path.is_file()
        }

    def render_many(
        self, template_name: str, contexts: Iterable[Mapping[str, Any]]
    ) -> list[RenderedEmail | TemplateRenderError]:
        """One email per context, rendered on the executors; failures as TemplateRenderError."""
        payload = [pickle.dumps(dict(c), protocol=pickle.HIGHEST_PROTOCOL) for c in contexts]
        if not payload:
            return []
        partitions = max(self.min_partitions, -(-len(payload) // self.rows_per_partition))
        frame = pd.DataFrame({"i": range(len(payload)), "context": payload})
        config = pickle.dumps(self.config)
        templates = self._templates

        def render_partitions(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
            renderer = _executor_renderer(config, templates)
            for batch in batches:
                contexts = [pickle.loads(c) for c in batch["context"]]
                results = renderer.render_many(template_name, contexts)
                yield pd.DataFrame({"i": batch["i"], "result": [pickle.dumps(r) for r in results]})

        self.jobs += 1
        rendered = (
            self.spark.createDataFrame(frame)
            .repartition(partitions)
            .mapInPandas(render_partitions, "i long, result binary")
            .toLocalIterator()
        )
        results: list[Any] = [None] * len(payload)
        for row in rendered:
            results[row["i"]] = pickle.loads(row["result"])
        missing = sum(r is None for r in results)
        if missing:
            raise RuntimeError(f"Spark rendering of {template_name} lost {missing} results")
        return results


def _executor_renderer(config_bytes: bytes, templates: dict[str, bytes]) -> EmailRenderer:
    """The executor's renderer for this config and these template files: built once per Python
    worker, then reused; from the shipped files when the configured folder is not here."""
    digest = hashlib.sha256(config_bytes)
    for name, data in templates.items():
        digest.update(name.encode() + b"\0" + hashlib.sha256(data).digest())
    key = digest.digest()
    renderer = _RENDERERS.get(key)
    if renderer is None:
        config: RendererConfig = pickle.loads(config_bytes)
        if not Path(config.templates_dir).is_dir():
            folder = Path(tempfile.mkdtemp(prefix="email-templates-"))
            for name, data in templates.items():
                (folder / name).parent.mkdir(parents=True, exist_ok=True)
                (folder / name).write_bytes(data)
            config = replace(config, templates_dir=folder, cache_dir=None)
        renderer = _RENDERERS[key] = EmailRenderer(config)
    return renderer
