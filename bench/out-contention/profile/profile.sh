#!/bin/bash
# Where enrich's own CPU goes while its engine decodes: py-spy on the engine actor and the driver.
cd /work/main
OUT=/tmp/prof; rm -rf $OUT; mkdir -p $OUT
.venv/bin/enrich run --task address --input bench/out-contention/input/address-400.jsonl --output $OUT/output \
  --model /work/main/.cache/tiny-qwen3 --id-column id --overwrite --batch-size 64 --max-model-len 1024 \
  --gpu-memory-utilization 0.25 --max-num-seqs 128 --max-num-batched-tokens 4096 --seed 0 --temperature 0.0 \
  --top-p 1.0 --max-tokens 256 --max-attempts 1 > $OUT/log.txt 2>&1 &
DRIVER=$!
# the engine is decoding once the actor logs "engine ready"
for i in $(seq 1 200); do pgrep -f "VLLM::Worker" > /dev/null && break; sleep 1; done
sleep 45  # the engine's profile run and warm-up, then the first batches
ACTOR=$(pgrep -f "MapWorker\(MapBatches\(EngineActor\)\)" | head -1)
echo "driver $DRIVER actor $ACTOR" > $OUT/pids.txt
ps -o pid,pcpu,args -p $DRIVER,$ACTOR >> $OUT/pids.txt
.venv/bin/py-spy record --pid $ACTOR --duration 60 --rate 20 --format raw --threads -o $OUT/actor.txt > $OUT/pyspy-actor.log 2>&1 &
.venv/bin/py-spy record --pid $DRIVER --duration 60 --rate 20 --format raw --threads -o $OUT/driver.txt > $OUT/pyspy-driver.log 2>&1 &
.venv/bin/python bench/cpu_share.py sample $OUT/cpu_samples.jsonl &
SAMPLER=$!
wait $DRIVER
echo "ENRICH EXIT $?" >> $OUT/pids.txt
sleep 2; kill $SAMPLER
echo PROFILE DONE
