"""Every SQL statement on the business tables (conversations, chat, tokens, agent, tasks).

Used by the handlers (writes that events request), the domain commands (synchronous writes of
the api role) and the queries. Parameters are positional; comments name them.
"""

from __future__ import annotations

# $1 conversation, $2 user, $3 now
TOUCH_CONVERSATION = """
INSERT INTO conversations (conversation_id, user_id, message_count, created_at, last_message_at)
VALUES ($1, $2, 1, $3, $3)
ON CONFLICT (conversation_id) DO UPDATE
SET message_count = conversations.message_count + 1,
    last_message_at = greatest(conversations.last_message_at, EXCLUDED.last_message_at)
"""

# $1 message id, $2 conversation, $3 user, $4 role, $5 content, $6 sent at, $7 now
INSERT_CHAT_MESSAGE = """
INSERT INTO chat_messages (message_id, conversation_id, user_id, role, content, sent_at, persisted_at)
VALUES ($1, $2, $3, $4, $5, $6, $7)
ON CONFLICT (message_id) DO NOTHING
"""

# $1 user, $2 conversation, $3 delta, $4 now. Not idempotent by itself: the outbox's
# consume-once guarantee is what keeps a redelivered adjustment from counting twice.
ADJUST_TOKENS = """
INSERT INTO token_usage (user_id, conversation_id, tokens, adjustments, updated_at)
VALUES ($1, $2, $3, 1, $4)
ON CONFLICT (user_id, conversation_id) DO UPDATE
SET tokens = token_usage.tokens + EXCLUDED.tokens,
    adjustments = token_usage.adjustments + 1,
    updated_at = EXCLUDED.updated_at
"""

# $1 conversation, $2 agent, $3 version, $4 state json, $5 now. Newer versions win; an older
# snapshot arriving late (a retry) never overwrites a newer one.
UPSERT_SNAPSHOT = """
INSERT INTO agent_state_snapshots (conversation_id, agent_id, version, state, updated_at)
VALUES ($1, $2, $3, $4::jsonb, $5)
ON CONFLICT (conversation_id) DO UPDATE
SET agent_id = EXCLUDED.agent_id, version = EXCLUDED.version, state = EXCLUDED.state,
    updated_at = EXCLUDED.updated_at
WHERE agent_state_snapshots.version < EXCLUDED.version
"""

# $1 conversation, $2 seq, $3 kind, $4 content json, $5 occurred at. Returns a row only when inserted.
INSERT_TIMELINE = """
INSERT INTO agent_timeline (conversation_id, seq, kind, content, occurred_at)
VALUES ($1, $2, $3, $4::jsonb, $5)
ON CONFLICT (conversation_id, seq) DO NOTHING
RETURNING seq
"""

# $1 conversation, $2 seq
SELECT_TIMELINE_ENTRY = """
SELECT kind, content, occurred_at FROM agent_timeline WHERE conversation_id = $1 AND seq = $2
"""

# $1 task, $2 user, $3 urgency, $4 reason, $5 now. Promotion only: urgency never goes down.
PROMOTE_TASK = """
INSERT INTO task_urgency (task_id, user_id, urgency, reason, promoted_at)
VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (task_id) DO UPDATE
SET urgency = EXCLUDED.urgency, reason = EXCLUDED.reason, promoted_at = EXCLUDED.promoted_at,
    user_id = EXCLUDED.user_id
WHERE task_urgency.urgency < EXCLUDED.urgency
"""

# --- queries ------------------------------------------------------------------------------------

SELECT_CONVERSATION = """
SELECT conversation_id, user_id, message_count, created_at, last_message_at
FROM conversations WHERE conversation_id = $1
"""

# $1 conversation, $2 limit
SELECT_HISTORY = """
SELECT message_id, conversation_id, user_id, role, content, sent_at
FROM chat_messages WHERE conversation_id = $1 ORDER BY sent_at, id LIMIT $2
"""

# $1 user
SELECT_TOKEN_USAGE = """
SELECT user_id, conversation_id, tokens, adjustments, updated_at
FROM token_usage WHERE user_id = $1 ORDER BY conversation_id
"""

# $1 conversation
SELECT_TIMELINE = """
SELECT conversation_id, seq, kind, content, occurred_at
FROM agent_timeline WHERE conversation_id = $1 ORDER BY seq
"""

SELECT_SNAPSHOT = """
SELECT conversation_id, agent_id, version, state, updated_at
FROM agent_state_snapshots WHERE conversation_id = $1
"""

SELECT_TASK_URGENCY = """
SELECT task_id, user_id, urgency, reason, promoted_at FROM task_urgency WHERE task_id = $1
"""

# --- api idempotency keys -----------------------------------------------------------------------

# $1 key. A transaction-level advisory lock on the key's hash: two requests with the same key
# run one after the other, so the second sees the first's stored response (or its absence, if
# the first rolled back). Unrelated keys collide only on a 64-bit hash match, and then merely wait.
LOCK_IDEMPOTENCY_KEY = "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))"

# $1 key
SELECT_IDEMPOTENCY_KEY = """
SELECT request_hash, status, response FROM api_idempotency_keys WHERE idempotency_key = $1
"""

# $1 key, $2 request hash, $3 status, $4 response json, $5 now
INSERT_IDEMPOTENCY_KEY = """
INSERT INTO api_idempotency_keys (idempotency_key, request_hash, status, response, created_at)
VALUES ($1, $2, $3, $4::jsonb, $5)
"""
