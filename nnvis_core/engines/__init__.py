"""Where the image-scope plugin calls run: in this process (local), in `--jobs N` worker
processes, or on Ray actors; the pooled engines share one driver loop (pool) and one worker.
"""
