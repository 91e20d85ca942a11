"""admission control: token buckets, the concurrency limiter, the priority scheduler, tenant rate limits"""
