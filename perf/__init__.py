"""pyperf benchmarks of cartridge against its peers; see perf/README.md and perf/run.py."""
