#!/bin/bash
# A/B of data.dali_threads (2 = old CPU default, 1 = new) on the demo's stage-1 and full configs
source /work/main/.venv/bin/activate; export OMP_NUM_THREADS=1 TORCH_EXTENSIONS_DIR=/tmp/main_torch_ext
cd /work/main
R=runs/demo-s3t1/seed0/runs
for arm in two-stage-s1 full; do
for rep in 1 2 3; do
for dt in 2 1; do
  o=/tmp/dt2/$arm-$dt-$rep
  python -m launch.train $R/$arm/config.yaml out_dir=$o resume=none tracking.enabled=false data.dali_threads=$dt > $o.log 2>&1 || echo FAIL
  python3 -c "
import json; d=json.load(open('$o/summary.json')); print('$arm dt=$dt rep=$rep', 'top1', d['top1'], 'median ms %.1f'%(d['step_time_median_s']*1e3), 'train_s %.2f'%d['train_time_s'], 'wait_total %.2f'%d['data_wait_total_s'], 'cpu_s %.1f'%d['train_cpu_s'])"
done; done; done
