"""Online reinforcement learning: replay buffers, the SAC/RLPD learner, offline IQL,
noise-space fine-tuning of diffusion policies, the simulated human, actor/learner transport."""
