"""Online reinforcement learning: prompts, rewards and rollouts for `honing rl` (GRPO, PPO)."""
