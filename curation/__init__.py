"""Dataset curation: a folder of raw footage becomes bucketed, captioned clips with a manifest.

Stages: `curate.curate` (ingest, probe, scene split, filters, dedupe/leakage, buckets,
re-encode, split, quarantine, `report.html`) and `caption.caption` (reviewed captions, sidecars,
a local VLM in `vlm`, the template; caption checks). `review` exports/imports the caption review
sheet, `status.dataset_status` gives the raw folder's DVC hash, `sample.generate_sample_dataset`
builds the procedural demo dataset, `card.load_card` reads `dataset.yaml`.
"""
