"""The serving processes: ``launch`` (``voxguard serve``: claim the port, choose the wiring, start it),
``server`` (one HTTP process under uvicorn, with a drain-first shutdown) and ``supervisor`` (the engine
and front-end processes of the split wiring, their entry points, restarts and drain). What each process
serves is built by ``voxguard.serving.wiring``.
"""
