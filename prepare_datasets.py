"""Download, verify and unpack the datasets into CoOp's layouts (see DATASETS.md).

    python prepare_datasets.py --root DATA [names...|all] [--dry-run] [--keep-archives]
    python prepare_datasets.py --root DATA ImageNet --export-fewshot DIR [--shots ...] [--seeds ...]
    python prepare_datasets.py --root DATA ImageNet --import-fewshot DIR
"""
import sys

from datasets.prepare import main

if __name__ == "__main__":
    sys.exit(main())
