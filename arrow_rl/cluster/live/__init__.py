"""The live ``Cluster`` backend: real vLLM instances behind the router of ``arrow_rl.serving``.

``cluster.LiveCluster`` sees a running router through its admin API and the instances through
their ``/metrics`` (``scraper``); ``launcher`` starts and supervises the instances; ``bench``
replays a workload against the router. The router's building blocks that need nothing of Arrow
live here too (``state``, ``protocol``, ``upstream``, ``sse``, ``validation``, ``metrics``,
``profiles``), as does ``fake_vllm``, the stand-in engine of the tests.
"""
