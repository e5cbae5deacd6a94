"""Training: LITE fine-tuning and the RL exit agent (`greencode train …`)."""
