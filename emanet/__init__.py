"""EMANet reproduced end to end."""
