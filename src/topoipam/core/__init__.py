"""Pure IPAM logic on values: blocks and ordinals (``block``), per-host block order (``blockgen``),
claimed-block summaries (``summary``), pool choice with reasons (``pools``). No I/O, clock or environment."""
