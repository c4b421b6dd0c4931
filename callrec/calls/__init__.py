"""The per-call flow: a pure state machine (`machine`), the plan a call starts with (`plan`),
agent availability (`agents`), opening hours (`hours`), and `CallManager` (`manager`), which
runs one task per call against Asterisk, the call store and the archiver."""
