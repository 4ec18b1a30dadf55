"""Batch work over image collections: classify, embed or extract features of folders, globs and lists
at full speed; resumable, tolerant of bad files, sharded across processes.

Read in the order the data flows: :mod:`.inputs` (what to read), :mod:`.pipeline` (decoding
workers), :mod:`.outputs` (what is computed per image, and the model call), :mod:`.job` (the
job: planning, running, resuming), :mod:`.store` (committed chunks on disk) and :mod:`.writers`
(the output files).
"""
