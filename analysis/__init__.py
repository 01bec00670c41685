"""Analysis of finished runs: discovery (`runs`), few-shot curves (`curves`) and the
transfer-difficulty study (`difficulty`). Each module with a figure is a command:

    python -m analysis.runs RUN_ROOT [...]
    python -m analysis.curves RUN_ROOT [...] --dataset NAME|all|average --out fig.png
    python -m analysis.difficulty RUN_ROOT [...] --zeroshot ZS_ROOT --out fig.png
"""
