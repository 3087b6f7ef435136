-- The audit: every invariant recomputed from the postings.

-- Recomputes every invariant from the postings (one consistent snapshot: one statement)
-- and returns one row per violation: what the postings say (expected) and what is stored
-- (actual). No rows: the ledger is sound. Pending withdrawals count as held; pending and
-- failed transactions move no money.
CREATE OR REPLACE FUNCTION ledger_audit()
RETURNS TABLE (check_name text, subject text, expected text, actual text)
LANGUAGE sql STABLE AS $$
WITH per_account AS (
    SELECT account_id, sum(amount) AS total, count(*) AS n
      FROM postings GROUP BY account_id
), chain AS (
    SELECT p.id, p.account_id, p.amount, p.balance_after, p.account_version,
           sum(p.amount) OVER w AS running,
           row_number() OVER w AS position
      FROM postings AS p
    WINDOW w AS (PARTITION BY p.account_id ORDER BY p.account_version, p.id)
), active_holds AS (
    -- What is held on an account: its active holds and its pending withdrawals.
    SELECT account_id, sum(amount) AS total FROM (
        SELECT account_id, amount FROM holds WHERE status = 'active'
        UNION ALL
        SELECT source_account_id, amount FROM transactions
         WHERE type = 'withdrawal' AND status = 'pending'
    ) AS reserved GROUP BY account_id
), refunds AS (
    -- (A refund to another database counts once delivered, never if refused: saga.sql.)
    SELECT refund_of, sum(amount) AS total FROM transactions
     WHERE type = 'refund' AND status NOT IN ('pending', 'failed') GROUP BY refund_of
)
SELECT 'transaction_balanced', p.transaction_id || ' ' || p.currency, '0', sum(p.amount)::text
  FROM postings AS p
 GROUP BY p.transaction_id, p.currency
HAVING sum(p.amount) <> 0
UNION ALL
SELECT 'currency_balanced', p.currency::text, '0', sum(p.amount)::text
  FROM postings AS p
 GROUP BY p.currency
HAVING sum(p.amount) <> 0
UNION ALL
-- Each shard's books balance by themselves: a movement between shards is two legs, each
-- balanced on its own shard.
SELECT 'shard_balanced', 'shard ' || ledger_shard_of(p.account_id) || ' ' || p.currency, '0',
       sum(p.amount)::text
  FROM postings AS p
 GROUP BY ledger_shard_of(p.account_id), p.currency
HAVING sum(p.amount) <> 0
UNION ALL
-- Nothing is on its way between two shards of one database: both legs commit together,
-- so the in-transit accounts of a pair cancel out. (A pair with one account here is
-- between two databases: the audit across databases checks it, in the service.)
SELECT 'in_transit_pair', 'shards ' || least(ledger_shard_of(a.id), a.peer_shard) || ' and '
       || greatest(ledger_shard_of(a.id), a.peer_shard) || ' ' || a.currency, '0',
       sum(a.balance)::text
  FROM accounts AS a
 WHERE a.kind = 'in_transit'
 GROUP BY least(ledger_shard_of(a.id), a.peer_shard),
          greatest(ledger_shard_of(a.id), a.peer_shard), a.currency
HAVING count(*) = 2 AND sum(a.balance) <> 0
UNION ALL
-- Each leg has its other leg: the other side, the same movement, refunded alike. (A leg
-- whose other leg's shard is another database's is checked across databases.)
SELECT 'legs_paired', t.id::text,
       t.leg || ' leg of ' || t.amount || ', refunded ' || t.refunded_amount,
       coalesce(c.leg || ' leg of ' || c.amount || ', refunded ' || c.refunded_amount
                || CASE WHEN c.counterpart_id = t.id THEN '' ELSE ' of another' END,
                'no other leg')
  FROM transactions AS t LEFT JOIN transactions AS c ON c.id = t.counterpart_id
 WHERE t.leg IS NOT NULL
   AND (c.id IS NOT NULL
        OR ledger_shard_of(t.counterpart_id) IN (SELECT s.shard FROM ledger_shards AS s
                                                  WHERE s.state = 'held'))
   AND (c.id IS NULL OR c.counterpart_id <> t.id OR c.leg = t.leg OR c.amount <> t.amount
        OR c.refunded_amount <> t.refunded_amount OR c.type <> t.type
        OR c.receipt_number <> t.receipt_number OR c.hold_id IS DISTINCT FROM t.hold_id)
UNION ALL
-- A debit leg waits (pending) exactly while its outbox row is there, of its amount.
SELECT 'leg_in_flight', t.id::text, 'an outbox row of ' || t.amount,
       coalesce('an outbox row of ' || o.amount, 'no outbox row')
  FROM transactions AS t LEFT JOIN ledger_outbox AS o ON o.transaction_id = t.id
 WHERE t.leg = 'debit' AND t.status = 'pending'
   AND (o.transaction_id IS NULL OR o.amount <> t.amount OR o.currency <> t.currency
        OR o.destination_shard <> ledger_shard_of(t.counterpart_id))
UNION ALL
SELECT 'leg_in_flight', o.transaction_id::text, 'a pending debit leg',
       coalesce(t.status || ' ' || coalesce(t.leg || ' leg', t.type), 'no transaction')
  FROM ledger_outbox AS o LEFT JOIN transactions AS t ON t.id = o.transaction_id
 WHERE t.id IS NULL OR t.leg IS DISTINCT FROM 'debit' OR t.status <> 'pending'
UNION ALL
-- A debit leg the other side refused moved nothing in the end: its postings there and
-- back.
SELECT 'refused_leg_reversed', t.id::text, 'postings there and back',
       string_agg(p.amount || ' on ' || p.account_id, ', ' ORDER BY p.id)
  FROM transactions AS t JOIN postings AS p ON p.transaction_id = t.id
 WHERE t.leg = 'debit' AND t.status = 'failed'
 GROUP BY t.id
HAVING NOT (count(*) = 4
            AND sum(p.amount) FILTER (WHERE p.account_id = t.source_account_id) = 0
            AND sum(p.amount) FILTER (WHERE p.account_id = t.destination_account_id) = 0
            AND bool_and(p.account_id IN (t.source_account_id, t.destination_account_id)))
UNION ALL
-- A credit leg refused here was never booked here.
SELECT 'refused_leg', r.transaction_id::text, 'refused, no credit leg', 'a credit leg'
  FROM ledger_refused_legs AS r
 WHERE EXISTS (SELECT FROM transactions AS c WHERE c.counterpart_id = r.transaction_id)
UNION ALL
-- A payment names the hold it captured (a credit leg names its debit leg's, on the payer's
-- shard, so without a foreign key; this checks the others). One the merchant's database
-- refused (saga.sql) names the hold it released instead.
SELECT 'payment_hold', t.id::text,
       'hold ' || t.hold_id || CASE WHEN t.status = 'failed' THEN ' voided'
                                    ELSE ' captured by it' END,
       coalesce(h.status || ' by ' || coalesce(h.capture_transaction_id::text, 'nothing'),
                'no such hold')
  FROM transactions AS t LEFT JOIN holds AS h ON h.id = t.hold_id
 WHERE t.hold_id IS NOT NULL AND t.leg IS DISTINCT FROM 'credit'
   AND (h.id IS NULL
        OR CASE WHEN t.status = 'failed'
                    THEN h.status <> 'voided' OR h.capture_transaction_id IS NOT NULL
                ELSE h.capture_transaction_id IS DISTINCT FROM t.id
           END)
UNION ALL
SELECT 'account_balance', a.id::text, coalesce(s.total, 0)::text, a.balance::text
  FROM accounts AS a LEFT JOIN per_account AS s ON s.account_id = a.id
 WHERE a.balance <> coalesce(s.total, 0)
UNION ALL
SELECT 'account_version', a.id::text, coalesce(s.n, 0)::text, a.version::text
  FROM accounts AS a LEFT JOIN per_account AS s ON s.account_id = a.id
 WHERE a.version <> coalesce(s.n, 0)
UNION ALL
SELECT 'posting_balance_after', 'posting ' || c.id || ' of account ' || c.account_id,
       c.running::text, c.balance_after::text
  FROM chain AS c
 WHERE c.balance_after <> c.running
UNION ALL
SELECT 'posting_version', 'posting ' || c.id || ' of account ' || c.account_id,
       c.position::text, c.account_version::text
  FROM chain AS c
 WHERE c.account_version <> c.position
UNION ALL
SELECT 'account_held', a.id::text, coalesce(h.total, 0)::text, a.held::text
  FROM accounts AS a LEFT JOIN active_holds AS h ON h.account_id = a.id
 WHERE a.held <> coalesce(h.total, 0)
UNION ALL
SELECT 'wallet_available', a.id::text, '>= 0',
       (a.balance - a.held + a.overdraft_limit)::text
  FROM accounts AS a
 WHERE a.kind = 'user_wallet' AND a.balance - a.held + a.overdraft_limit < 0
UNION ALL
SELECT 'refunded_amount', t.id::text, coalesce(r.total, 0)::text, t.refunded_amount::text
  FROM transactions AS t LEFT JOIN refunds AS r ON r.refund_of = t.id
 WHERE t.refunded_amount <> coalesce(r.total, 0)
UNION ALL
SELECT 'transaction_has_postings', t.id::text, 'postings', 'none'
  FROM transactions AS t
 WHERE t.type NOT IN ('freeze', 'unfreeze') AND t.status NOT IN ('pending', 'failed')
   AND NOT EXISTS (SELECT FROM postings AS p WHERE p.transaction_id = t.id)
UNION ALL
-- (A debit leg on its way, or refused, moved its money into the in-transit account and,
-- refused, back: checked above.)
SELECT 'status_change_without_postings', t.id::text, 'none', count(*)::text || ' postings'
  FROM transactions AS t JOIN postings AS p ON p.transaction_id = t.id
 WHERE t.type IN ('freeze', 'unfreeze')
    OR (t.status IN ('pending', 'failed') AND t.leg IS DISTINCT FROM 'debit')
 GROUP BY t.id
UNION ALL
-- A money transaction (without fee: no function charges one yet) is exactly a debit of
-- its source and a credit of its destination, of its amount.
SELECT 'transaction_postings', t.id::text,
       '-' || t.amount || ' on ' || t.source_account_id
           || ', +' || t.amount || ' on ' || t.destination_account_id,
       string_agg(p.amount || ' on ' || p.account_id, ', ' ORDER BY p.id)
  FROM transactions AS t JOIN postings AS p ON p.transaction_id = t.id
 WHERE t.type NOT IN ('freeze', 'unfreeze') AND t.fee = 0 AND t.status <> 'failed'
 GROUP BY t.id
HAVING NOT (count(*) = 2
            AND bool_or(p.account_id = t.source_account_id AND p.amount = -t.amount)
            AND bool_or(p.account_id = t.destination_account_id AND p.amount = t.amount))
UNION ALL
SELECT 'hold_capture', h.id::text, h.captured_amount || ' by payment ' || h.capture_transaction_id,
       coalesce(t.amount || ' by ' || t.type || ' for hold ' || t.hold_id, 'no transaction')
  FROM holds AS h LEFT JOIN transactions AS t ON t.id = h.capture_transaction_id
 WHERE h.status = 'captured'
   AND (t.id IS NULL OR t.amount <> h.captured_amount OR t.type <> 'payment'
        OR t.hold_id IS DISTINCT FROM h.id)
UNION ALL
-- A hold's merchant wallet, where it is one of this database: there, in the hold's
-- currency, of the owner the hold names (what a foreign key checked before holds could
-- name a wallet of another database).
SELECT 'hold_merchant', h.id::text, h.currency || ' wallet of ' || h.merchant_owner_id,
       coalesce(a.currency || ' wallet of ' || a.owner_id, 'no wallet')
  FROM holds AS h LEFT JOIN accounts AS a ON a.id = h.merchant_account_id
 WHERE (a.id IS NOT NULL
        OR ledger_shard_of(h.merchant_account_id) IN (SELECT s.shard FROM ledger_shards AS s
                                                       WHERE s.state = 'held'))
   AND (a.id IS NULL OR a.currency <> h.currency OR a.owner_id <> h.merchant_owner_id)
$$;
