"""netspec vs PyTorch benchmark (run ``python bench/bench.py``; method in its docstring).

* ``bench.py``: the command line, and the report put together in the order it prints;
* ``nets.py``: the bench nets (a model's layers for one phase, Data replaced by Input) and the
  netspec solver, inputs and weights built from them;
* ``torch_model.py``: the same net as a ``torch.nn`` module with netspec's weights, its SGD;
* ``numpy_mlp.py``: the hand-written NumPy MLP the seeds' MLP is also timed against;
* ``schedule.py``: the alternation of the frameworks' steps, the timed runs, the GEMM peak;
* ``memory.py``: peak memory, each framework in a fresh subprocess;
* ``layer_profile.py``: ``--profile``, per layer (netspec) and per operator (torch);
* ``report.py``: the environment header and the Markdown tables.
* ``shared.py``: solver settings and layer-dict helpers, importing no framework;
* ``big_nets.py``: ``python -m bench.big_nets``, the zoo's big nets against PyTorch and OpenCV
  dnn (inference, training steps, ``--memory``, ``--baseline`` for before/after), with
  ``zoo.py`` building those nets (deploy or training form, seeded weights) and
  ``layer_profile.py``'s ``forward_profile`` their per-family forward profile.
"""
