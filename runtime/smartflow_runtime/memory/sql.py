"""Every SQL statement on ``memory_jobs`` and ``memory_facts``. Only :mod:`.store` executes these."""

from __future__ import annotations

JOB_COLUMNS = """
    id, job_type, idempotency_key, payload, status, attempts, max_attempts, available_at,
    lease_owner, lease_until, last_error
"""

# $1 type, $2 key, $3 payload json, $4 max attempts, $5 now. Idempotent by key.
ENQUEUE = """
INSERT INTO memory_jobs (job_type, idempotency_key, payload, status, attempts, max_attempts,
                         available_at, created_at, updated_at)
VALUES ($1, $2, $3::jsonb, 'pending', 0, $4, $5, $5, $5)
ON CONFLICT (idempotency_key) DO NOTHING
RETURNING id
"""

NOTIFY = "SELECT pg_notify($1, '')"

# $1 now, $2 error. A job whose lease expired on its last allowed attempt is not retried forever.
BURY_EXPIRED = """
UPDATE memory_jobs SET status = 'dead', last_error = $2, lease_owner = NULL, lease_until = NULL,
       updated_at = $1, finished_at = $1
WHERE status = 'processing' AND lease_until < $1 AND attempts >= max_attempts
RETURNING id
"""

# $1 worker, $2 now, $3 lease end. One due job (or one whose worker's lease expired), SKIP LOCKED
# so concurrent workers each get a different job without waiting on each other.
CLAIM = f"""
UPDATE memory_jobs j
SET status = 'processing', lease_owner = $1, lease_until = $3, attempts = j.attempts + 1,
    updated_at = $2
WHERE j.id = (
    SELECT id FROM memory_jobs
    WHERE (status IN ('pending', 'failed') AND available_at <= $2)
       OR (status = 'processing' AND lease_until < $2)
    ORDER BY id
    LIMIT 1
    FOR UPDATE SKIP LOCKED)
RETURNING {JOB_COLUMNS}
"""

# $1 id, $2 worker, $3 attempts, $4 lease end. Compare-and-swap on owner and attempt.
RENEW = """
UPDATE memory_jobs SET lease_until = $4
WHERE id = $1 AND status = 'processing' AND lease_owner = $2 AND attempts = $3
RETURNING id
"""

# $1 id, $2 worker, $3 attempts, $4 now. Only the current lease holder may complete the job.
COMPLETE = """
UPDATE memory_jobs SET status = 'succeeded', lease_owner = NULL, lease_until = NULL, last_error = NULL,
       updated_at = $4, finished_at = $4
WHERE id = $1 AND status = 'processing' AND lease_owner = $2 AND attempts = $3
RETURNING id
"""

# $1 id, $2 worker, $3 attempts, $4 dead?, $5 next available, $6 error, $7 now
FAIL = """
UPDATE memory_jobs
SET status = CASE WHEN $4::bool THEN 'dead' ELSE 'failed' END,
    available_at = $5, last_error = $6, lease_owner = NULL, lease_until = NULL, updated_at = $7::timestamptz,
    finished_at = CASE WHEN $4::bool THEN $7::timestamptz ELSE NULL END
WHERE id = $1 AND status = 'processing' AND lease_owner = $2 AND attempts = $3
RETURNING status
"""

# $1 job ids, $2 users, $3 conversations, $4 kinds, $5 facts, $6 now
INSERT_FACTS = """
INSERT INTO memory_facts (job_id, user_id, conversation_id, kind, fact, created_at)
SELECT f.job_id, f.user_id, f.conversation_id, f.kind, f.fact, $6
FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[])
         AS f(job_id, user_id, conversation_id, kind, fact)
ON CONFLICT (job_id, fact) DO NOTHING
"""

# $1 user, $2 limit
SELECT_FACTS = """
SELECT id, job_id, user_id, conversation_id, kind, fact, created_at
FROM memory_facts WHERE user_id = $1 ORDER BY id LIMIT $2
"""

# $1 idempotency key
SELECT_JOB_BY_KEY = f"SELECT {JOB_COLUMNS} FROM memory_jobs WHERE idempotency_key = $1"
