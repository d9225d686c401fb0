"""Deep networks with the heads the theory suggests: fixed simplex-ETF, normalized, learned."""
