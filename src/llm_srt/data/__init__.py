"""Data: manifests (the JSONL schema), corpus converters, the embedded mini corpus, the feature cache, the loader.

Import what you need from the submodules (loader imports torch; the rest do not):
manifest (Row, read_manifest, write_manifest), fleurs / covost2 / commonvoice / mini (converters), prepare (the
`llm-srt prepare` verb), features (FeatureCache), loader (SpeechTextDataset, BucketBatchSampler, collate).
"""

from .manifest import Row, read_manifest, write_manifest

__all__ = ["Row", "read_manifest", "write_manifest"]
