"""Anti-entropy, pure: how two servers find and repair what one of them lacks (§5).

``fingerprint`` (the O(1) accumulator), the sorted event index with per-author
sequences, ``digest`` (bucketed summaries of a range), ``checkpoint`` (id lists and the
page rules) and ``planner`` (the repair state machine: digest, descend, checkpoint). No
I/O: the store answers the planner's questions, the runtime performs its requests.
"""
