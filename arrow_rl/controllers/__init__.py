"""arrow_rl.controllers"""
