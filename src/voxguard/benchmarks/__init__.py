"""``voxguard bench``: ``model_bench`` (forward timings and engine agreement inside one process),
``serve_bench`` (the serving stack under load), ``loadgen`` (wrk, the load generator) and
``framework_floor`` (the bare FastAPI app the serving benchmark compares with).
"""
