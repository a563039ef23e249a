"""arrow_rl.cluster.live"""
