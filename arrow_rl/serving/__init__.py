"""The HTTP router application in front of a live vLLM cluster (``arrow-rl serve``, ``deploy``).

It runs Arrow's request routing (``arrow_rl.arrow``) on live instances and a ``Controller``'s
flips against them, so it ranks above both; the live ``Cluster`` backend it serves
(``arrow_rl.cluster.live``: the cluster client, launcher, scraper, upstream client) ranks below.
``router.Router`` is the entry point; docs/live_cluster.md describes the whole.
"""
