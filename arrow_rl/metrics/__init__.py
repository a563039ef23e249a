"""arrow_rl.metrics"""
