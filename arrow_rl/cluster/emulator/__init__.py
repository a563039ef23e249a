"""arrow_rl.cluster.emulator"""
