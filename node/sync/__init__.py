"""Anti-entropy, pure: how two servers find and repair what one of them lacks (§5).

``fingerprint`` (the O(1) accumulator), ``index`` (the sorted event index with prefix
sums and per-author sequences, which the store answers from and builds digests with),
``digest`` (the query and the validation of a peer's document), ``checkpoint`` (id lists
and the page rules), ``planner`` (the repair state machine: digest, descend,
checkpoint) and ``actions`` (what the planner reads, requests and reports). No I/O: the
store answers the planner's questions, the runtime performs its requests.
"""
