//! The command table: what the router does with each command it knows.
//!
//! Every entry has Redis' arity (positive: exactly that many arguments counting the
//! name; negative: at least that many) and a [`Kind`]. Data commands carry their key
//! positions the way `COMMAND INFO` describes them (`first`, `last`, `step`, the last
//! counted from the end when negative) or a `numkeys` argument (EVAL, ZUNIONSTORE,
//! LMPOP, …). Anything not in the table is unsupported.

use std::collections::HashMap;
use std::sync::LazyLock;

use bytes::Bytes;

/// Whether a data command only reads or may write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Reads only: routed to the reading side of a moving range (and may use replicas).
    Read,
    /// May write: routed to the primary, dual-written during migrations.
    Write,
}

/// Where a data command's keys are among its arguments (index 0 is the name).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeySpec {
    /// Keys at `first`, `first + step`, … up to `last` (from the end when negative).
    Range {
        /// Index of the first key.
        first: usize,
        /// Index of the last key; `-1` is the last argument.
        last: isize,
        /// Distance between keys (2 for MSET).
        step: usize,
    },
    /// A `numkeys` argument at `numkeys`, followed by that many keys; `dest` is an
    /// extra key before it (ZUNIONSTORE's destination).
    NumKeys {
        /// Index of the `numkeys` argument.
        numkeys: usize,
        /// Index of a destination key, if any.
        dest: Option<usize>,
    },
    /// SORT / SORT_RO: the key at 1 and the key after `STORE`.
    Sort,
    /// XREAD / XREADGROUP: the first half of the arguments after `STREAMS`.
    Streams,
}

/// Commands answered by the router itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LocalCmd {
    /// AUTH [user] password
    Auth,
    /// HELLO [protover [AUTH user pass] [SETNAME name]]
    Hello,
    /// ECHO message
    Echo,
    /// SELECT db (only 0)
    Select,
    /// CLIENT SETNAME/GETNAME/SETINFO/ID
    Client,
    /// COMMAND, COMMAND DOCS, COMMAND COUNT, …
    Command,
    /// QUIT
    Quit,
    /// RESET
    Reset,
    /// MULTI
    Multi,
    /// EXEC
    Exec,
    /// DISCARD
    Discard,
    /// UNWATCH (a no-op: WATCH is refused)
    Unwatch,
}

/// Commands sent to every shard, their replies merged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScatterCmd {
    /// PING [message]: every primary must answer.
    Ping,
    /// DBSIZE: the sum.
    Dbsize,
    /// KEYS pattern: the union of the keys each shard owns.
    Keys,
    /// SCAN cursor …: shard after shard, the cursor naming the shard.
    Scan,
    /// INFO [section]: one section per shard and a merged keyspace.
    Info,
    /// FLUSHDB [ASYNC|SYNC]: guarded by `--allow-flush`.
    Flushdb,
}

/// What the router does with a command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Routed by its keys.
    Data(Access, KeySpec),
    /// Answered by the router.
    Local(LocalCmd),
    /// Sent to every shard.
    Scatter(ScatterCmd),
    /// Refused, with the reason when there is a more specific one.
    Unsupported(Option<&'static str>),
}

/// One entry of the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CommandSpec {
    /// Lower-case name (also the `command` label of the metrics).
    pub name: &'static str,
    /// Redis' arity: exact when positive, minimum when negative (counting the name).
    pub arity: i32,
    /// What the router does with it.
    pub kind: Kind,
}

/// Why the keys of a command could not be found.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// Too few or too many arguments.
    #[error("ERR wrong number of arguments for '{0}' command")]
    Arity(&'static str),
    /// A `numkeys` argument that is not a number or does not match the arguments.
    #[error("ERR Number of keys can't be greater than number of args")]
    NumKeys,
    /// An argument form the router refuses (e.g. SORT … BY pattern).
    #[error("ERR {0}")]
    Refused(&'static str),
}

impl CommandSpec {
    /// Whether `argc` arguments (counting the name) satisfy the arity.
    pub fn arity_ok(&self, argc: usize) -> bool {
        let arity = self.arity.unsigned_abs() as usize;
        if self.arity >= 0 {
            argc == arity
        } else {
            argc >= arity
        }
    }

    /// [`KeyError::Arity`] unless `argc` arguments satisfy the arity.
    pub fn check_arity(&self, argc: usize) -> Result<(), KeyError> {
        if self.arity_ok(argc) {
            Ok(())
        } else {
            Err(KeyError::Arity(self.name))
        }
    }

    /// The keys of `args` (the name at index 0), after checking the arity.
    pub fn keys(&self, args: &[Bytes]) -> Result<Vec<Bytes>, KeyError> {
        self.check_arity(args.len())?;
        match self.kind {
            Kind::Data(_, spec) => spec_keys(self.name, spec, args),
            _ => Ok(Vec::new()),
        }
    }

    /// The access of a data command; `None` for other kinds.
    pub fn access(&self) -> Option<Access> {
        match self.kind {
            Kind::Data(access, _) => Some(access),
            _ => None,
        }
    }
}

fn spec_keys(name: &'static str, spec: KeySpec, args: &[Bytes]) -> Result<Vec<Bytes>, KeyError> {
    match spec {
        KeySpec::Range { first, last, step } => range_keys(name, args, first, last, step),
        KeySpec::NumKeys { numkeys, dest } => numkeys_keys(args, numkeys, dest),
        KeySpec::Sort => sort_keys(args),
        KeySpec::Streams => stream_keys(name, args),
    }
}

fn range_keys(
    name: &'static str,
    args: &[Bytes],
    first: usize,
    last: isize,
    step: usize,
) -> Result<Vec<Bytes>, KeyError> {
    let last = if last < 0 {
        args.len() as isize + last
    } else {
        last
    };
    let last = usize::try_from(last).map_err(|_| KeyError::Arity(name))?;
    if last >= args.len() || first > last {
        return Err(KeyError::Arity(name));
    }
    if step > 1 && !(last + 1 - first).is_multiple_of(step) && last + 1 == args.len() {
        // MSET k v k: the trailing key has no value.
        return Err(KeyError::Arity(name));
    }
    Ok(args[first..=last]
        .iter()
        .step_by(step.max(1))
        .cloned()
        .collect())
}

fn numkeys_keys(
    args: &[Bytes],
    numkeys: usize,
    dest: Option<usize>,
) -> Result<Vec<Bytes>, KeyError> {
    let count = args
        .get(numkeys)
        .and_then(|n| super::resp::parse_int(n))
        .and_then(|n| usize::try_from(n).ok())
        .ok_or(KeyError::NumKeys)?;
    let start = numkeys + 1;
    if start + count > args.len() {
        return Err(KeyError::NumKeys);
    }
    let mut keys: Vec<Bytes> = dest
        .and_then(|d| args.get(d))
        .cloned()
        .into_iter()
        .collect();
    keys.extend(args[start..start + count].iter().cloned());
    Ok(keys)
}

fn sort_keys(args: &[Bytes]) -> Result<Vec<Bytes>, KeyError> {
    let mut keys = vec![args[1].clone()];
    let mut i = 2;
    while i < args.len() {
        let word = &args[i];
        if word.eq_ignore_ascii_case(b"BY") || word.eq_ignore_ascii_case(b"GET") {
            return Err(KeyError::Refused(
                "SORT with BY or GET patterns is not supported by ringmaster router (they name other keys)",
            ));
        }
        if word.eq_ignore_ascii_case(b"STORE") {
            let dest = args.get(i + 1).ok_or(KeyError::Arity("sort"))?;
            keys.push(dest.clone());
            i += 1;
        }
        i += 1;
    }
    Ok(keys)
}

fn stream_keys(name: &'static str, args: &[Bytes]) -> Result<Vec<Bytes>, KeyError> {
    if args.iter().any(|a| a.eq_ignore_ascii_case(b"BLOCK")) {
        return Err(KeyError::Refused(
            "blocking stream reads (BLOCK) are not supported by ringmaster router",
        ));
    }
    let streams = args
        .iter()
        .position(|a| a.eq_ignore_ascii_case(b"STREAMS"))
        .ok_or(KeyError::Arity(name))?;
    let rest = &args[streams + 1..];
    if rest.is_empty() || !rest.len().is_multiple_of(2) {
        return Err(KeyError::Refused(
            "Unbalanced 'xread' list of streams: for each stream key an ID or '$' must be specified.",
        ));
    }
    Ok(rest[..rest.len() / 2].to_vec())
}

/// A parsed request: its arguments and, when known, its table entry.
#[derive(Clone, Debug)]
pub struct Command {
    /// The arguments, the name first.
    pub args: Vec<Bytes>,
    /// The table entry; `None` for unknown commands.
    pub spec: Option<&'static CommandSpec>,
}

impl Command {
    /// Looks `args[0]` up in the table.
    pub fn new(args: Vec<Bytes>) -> Self {
        let spec = args.first().and_then(|name| lookup(name));
        Self { args, spec }
    }

    /// The `command` label of the metrics: the table name, or `unknown`.
    pub fn label(&self) -> &'static str {
        self.spec.map_or("unknown", |spec| spec.name)
    }

    /// The name as the client sent it, printable and at most 64 characters (for
    /// error messages).
    pub fn display_name(&self) -> String {
        let name = self.args.first().map(|b| &b[..]).unwrap_or_default();
        name.iter()
            .take(64)
            .map(|&b| {
                if b.is_ascii_graphic() {
                    char::from(b)
                } else {
                    '?'
                }
            })
            .collect::<String>()
            .to_ascii_lowercase()
    }

    /// The `n`-th argument uppercased, for sub-command dispatch.
    pub fn arg_upper(&self, n: usize) -> Option<String> {
        self.args
            .get(n)
            .map(|a| String::from_utf8_lossy(a).to_ascii_uppercase())
    }
}

/// The entry for command `name` (any case).
pub fn lookup(name: &[u8]) -> Option<&'static CommandSpec> {
    let mut lower = [0u8; 32];
    let lower = lower.get_mut(..name.len())?;
    lower.copy_from_slice(name);
    lower.make_ascii_lowercase();
    TABLE.get(std::str::from_utf8(lower).ok()?)
}

/// Every entry, by lower-case name.
pub fn all() -> impl Iterator<Item = &'static CommandSpec> {
    TABLE.values()
}

static TABLE: LazyLock<HashMap<&'static str, CommandSpec>> = LazyLock::new(|| {
    let mut table = HashMap::new();
    for spec in data_commands().into_iter().chain(other_commands()) {
        table.insert(spec.name, spec);
    }
    table
});

const fn range(first: usize, last: isize, step: usize) -> KeySpec {
    KeySpec::Range { first, last, step }
}

/// The single key at 1.
const K1: KeySpec = range(1, 1, 1);
/// Every argument from 1 on is a key.
const ALL: KeySpec = range(1, -1, 1);
/// The keys at 1 and 2.
const K12: KeySpec = range(1, 2, 1);
/// Key/value pairs from 1 on.
const PAIRS: KeySpec = range(1, -1, 2);
/// The key at 2 (sub-commands: OBJECT ENCODING key).
const K2: KeySpec = range(2, 2, 1);

const fn numkeys(at: usize) -> KeySpec {
    KeySpec::NumKeys {
        numkeys: at,
        dest: None,
    }
}

/// `dest numkeys key…` (ZUNIONSTORE).
const DEST_NUMKEYS: KeySpec = KeySpec::NumKeys {
    numkeys: 2,
    dest: Some(1),
};

fn read(name: &'static str, arity: i32, keys: KeySpec) -> CommandSpec {
    CommandSpec {
        name,
        arity,
        kind: Kind::Data(Access::Read, keys),
    }
}

fn write(name: &'static str, arity: i32, keys: KeySpec) -> CommandSpec {
    CommandSpec {
        name,
        arity,
        kind: Kind::Data(Access::Write, keys),
    }
}

fn local(name: &'static str, arity: i32, cmd: LocalCmd) -> CommandSpec {
    CommandSpec {
        name,
        arity,
        kind: Kind::Local(cmd),
    }
}

fn scatter(name: &'static str, arity: i32, cmd: ScatterCmd) -> CommandSpec {
    CommandSpec {
        name,
        arity,
        kind: Kind::Scatter(cmd),
    }
}

fn unsupported(name: &'static str, reason: Option<&'static str>) -> CommandSpec {
    CommandSpec {
        name,
        arity: -1,
        kind: Kind::Unsupported(reason),
    }
}

fn data_commands() -> Vec<CommandSpec> {
    let mut specs = string_commands();
    specs.extend(key_commands());
    specs.extend(hash_commands());
    specs.extend(list_commands());
    specs.extend(set_commands());
    specs.extend(zset_commands());
    specs.extend(misc_data_commands());
    specs
}

fn string_commands() -> Vec<CommandSpec> {
    vec![
        read("get", 2, K1),
        write("set", -3, K1),
        write("setnx", 3, K1),
        write("setex", 4, K1),
        write("psetex", 4, K1),
        write("getset", 3, K1),
        write("getdel", 2, K1),
        write("getex", -2, K1),
        write("append", 3, K1),
        read("strlen", 2, K1),
        read("getrange", 4, K1),
        read("substr", 4, K1),
        write("setrange", 4, K1),
        write("incr", 2, K1),
        write("decr", 2, K1),
        write("incrby", 3, K1),
        write("decrby", 3, K1),
        write("incrbyfloat", 3, K1),
        read("mget", -2, ALL),
        write("mset", -3, PAIRS),
        write("msetnx", -3, PAIRS),
        read("lcs", -3, K12),
        write("setbit", 4, K1),
        read("getbit", 3, K1),
        read("bitcount", -2, K1),
        read("bitpos", -3, K1),
        write("bitop", -4, range(2, -1, 1)),
        write("bitfield", -2, K1),
        read("bitfield_ro", -2, K1),
    ]
}

fn key_commands() -> Vec<CommandSpec> {
    vec![
        write("del", -2, ALL),
        write("unlink", -2, ALL),
        read("exists", -2, ALL),
        read("touch", -2, ALL),
        read("type", 2, K1),
        read("ttl", 2, K1),
        read("pttl", 2, K1),
        read("expiretime", 2, K1),
        read("pexpiretime", 2, K1),
        write("expire", -3, K1),
        write("pexpire", -3, K1),
        write("expireat", -3, K1),
        write("pexpireat", -3, K1),
        write("persist", 2, K1),
        write("rename", 3, K12),
        write("renamenx", 3, K12),
        write("copy", -3, K12),
        read("dump", 2, K1),
        write("restore", -4, K1),
        read("object", -3, K2),
        write("sort", -2, KeySpec::Sort),
        read("sort_ro", -2, KeySpec::Sort),
    ]
}

fn hash_commands() -> Vec<CommandSpec> {
    vec![
        write("hset", -4, K1),
        write("hsetnx", 4, K1),
        write("hmset", -4, K1),
        read("hget", 3, K1),
        read("hmget", -3, K1),
        read("hgetall", 2, K1),
        write("hdel", -3, K1),
        read("hexists", 3, K1),
        write("hincrby", 4, K1),
        write("hincrbyfloat", 4, K1),
        read("hkeys", 2, K1),
        read("hvals", 2, K1),
        read("hlen", 2, K1),
        read("hstrlen", 3, K1),
        read("hrandfield", -2, K1),
        read("hscan", -3, K1),
    ]
}

fn list_commands() -> Vec<CommandSpec> {
    vec![
        write("lpush", -3, K1),
        write("rpush", -3, K1),
        write("lpushx", -3, K1),
        write("rpushx", -3, K1),
        write("lpop", -2, K1),
        write("rpop", -2, K1),
        read("llen", 2, K1),
        read("lrange", 4, K1),
        read("lindex", 3, K1),
        write("lset", 4, K1),
        write("lrem", 4, K1),
        write("ltrim", 4, K1),
        write("linsert", 5, K1),
        read("lpos", -3, K1),
        write("rpoplpush", 3, K12),
        write("lmove", 5, K12),
        write("lmpop", -4, numkeys(1)),
    ]
}

fn set_commands() -> Vec<CommandSpec> {
    vec![
        write("sadd", -3, K1),
        write("srem", -3, K1),
        read("smembers", 2, K1),
        read("sismember", 3, K1),
        read("smismember", -3, K1),
        read("scard", 2, K1),
        write("spop", -2, K1),
        read("srandmember", -2, K1),
        write("smove", 4, K12),
        read("sinter", -2, ALL),
        read("sunion", -2, ALL),
        read("sdiff", -2, ALL),
        write("sinterstore", -3, ALL),
        write("sunionstore", -3, ALL),
        write("sdiffstore", -3, ALL),
        read("sintercard", -3, numkeys(1)),
        read("sscan", -3, K1),
    ]
}

fn zset_commands() -> Vec<CommandSpec> {
    vec![
        write("zadd", -4, K1),
        write("zincrby", 4, K1),
        write("zrem", -3, K1),
        read("zcard", 2, K1),
        read("zcount", 4, K1),
        read("zscore", 3, K1),
        read("zmscore", -3, K1),
        read("zrank", -3, K1),
        read("zrevrank", -3, K1),
        read("zrange", -4, K1),
        write("zrangestore", -5, K12),
        read("zrevrange", -4, K1),
        read("zrangebyscore", -4, K1),
        read("zrevrangebyscore", -4, K1),
        read("zrangebylex", -4, K1),
        read("zrevrangebylex", -4, K1),
        read("zlexcount", 4, K1),
        write("zremrangebyrank", 4, K1),
        write("zremrangebyscore", 4, K1),
        write("zremrangebylex", 4, K1),
        write("zpopmin", -2, K1),
        write("zpopmax", -2, K1),
        read("zrandmember", -2, K1),
        read("zscan", -3, K1),
        read("zunion", -3, numkeys(1)),
        read("zinter", -3, numkeys(1)),
        read("zdiff", -3, numkeys(1)),
        read("zintercard", -3, numkeys(1)),
        write("zunionstore", -4, DEST_NUMKEYS),
        write("zinterstore", -4, DEST_NUMKEYS),
        write("zdiffstore", -4, DEST_NUMKEYS),
        write("zmpop", -4, numkeys(1)),
    ]
}

fn misc_data_commands() -> Vec<CommandSpec> {
    vec![
        write("pfadd", -2, K1),
        read("pfcount", -2, ALL),
        write("pfmerge", -2, ALL),
        write("geoadd", -5, K1),
        read("geopos", -2, K1),
        read("geodist", -4, K1),
        read("geohash", -2, K1),
        read("geosearch", -7, K1),
        write("geosearchstore", -8, K12),
        read("georadius_ro", -6, K1),
        read("georadiusbymember_ro", -5, K1),
        write("xadd", -5, K1),
        read("xrange", -4, K1),
        read("xrevrange", -4, K1),
        read("xlen", 2, K1),
        write("xdel", -3, K1),
        write("xtrim", -4, K1),
        write("xack", -4, K1),
        write("xgroup", -3, K2),
        read("xinfo", -3, K2),
        read("xpending", -3, K1),
        write("xclaim", -6, K1),
        write("xautoclaim", -6, K1),
        write("xsetid", -3, K1),
        read("xread", -4, KeySpec::Streams),
        write("xreadgroup", -7, KeySpec::Streams),
        write("eval", -3, numkeys(2)),
        write("evalsha", -3, numkeys(2)),
        read("eval_ro", -3, numkeys(2)),
        read("evalsha_ro", -3, numkeys(2)),
        write("fcall", -3, numkeys(2)),
        read("fcall_ro", -3, numkeys(2)),
    ]
}

const BLOCKING: Option<&str> = Some("blocking commands are not supported");
const PUBSUB: Option<&str> = Some("pub/sub is not supported");
const ADMIN: Option<&str> = Some("server administration goes to the shards directly");

fn other_commands() -> Vec<CommandSpec> {
    let mut specs = vec![
        local("auth", -2, LocalCmd::Auth),
        local("hello", -1, LocalCmd::Hello),
        local("echo", 2, LocalCmd::Echo),
        local("select", 2, LocalCmd::Select),
        local("client", -2, LocalCmd::Client),
        local("command", -1, LocalCmd::Command),
        local("quit", -1, LocalCmd::Quit),
        local("reset", 1, LocalCmd::Reset),
        local("multi", 1, LocalCmd::Multi),
        local("exec", 1, LocalCmd::Exec),
        local("discard", 1, LocalCmd::Discard),
        local("unwatch", 1, LocalCmd::Unwatch),
        scatter("ping", -1, ScatterCmd::Ping),
        scatter("dbsize", 1, ScatterCmd::Dbsize),
        scatter("keys", 2, ScatterCmd::Keys),
        scatter("scan", -2, ScatterCmd::Scan),
        scatter("info", -1, ScatterCmd::Info),
        scatter("flushdb", -1, ScatterCmd::Flushdb),
        unsupported("watch", Some("WATCH is not supported by ringmaster router")),
        unsupported("georadius", Some("use GEOSEARCH or GEOSEARCHSTORE")),
        unsupported("georadiusbymember", Some("use GEOSEARCH or GEOSEARCHSTORE")),
        unsupported("randomkey", Some("keys are spread over shards")),
        unsupported("move", Some("only database 0 is served")),
        unsupported("swapdb", Some("only database 0 is served")),
        unsupported("wait", Some("replication is managed by the operator")),
        unsupported("waitaof", Some("replication is managed by the operator")),
        unsupported("script", Some("use EVAL (scripts are cached per shard)")),
        unsupported("function", Some("functions are not managed by the router")),
    ];
    for name in [
        "blpop",
        "brpop",
        "brpoplpush",
        "blmove",
        "blmpop",
        "bzpopmin",
        "bzpopmax",
        "bzmpop",
    ] {
        specs.push(unsupported(name, BLOCKING));
    }
    for name in [
        "subscribe",
        "psubscribe",
        "ssubscribe",
        "unsubscribe",
        "punsubscribe",
        "sunsubscribe",
        "publish",
        "spublish",
        "pubsub",
    ] {
        specs.push(unsupported(name, PUBSUB));
    }
    for name in [
        "flushall",
        "migrate",
        "cluster",
        "monitor",
        "debug",
        "config",
        "shutdown",
        "replicaof",
        "slaveof",
        "save",
        "bgsave",
        "bgrewriteaof",
        "sync",
        "psync",
        "acl",
        "module",
        "slowlog",
        "latency",
        "lastsave",
        "memory",
        "role",
        "time",
        "failover",
        "readonly",
        "readwrite",
        "asking",
        "lolwut",
    ] {
        specs.push(unsupported(name, ADMIN));
    }
    specs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(words: &[&str]) -> Vec<Bytes> {
        words
            .iter()
            .map(|w| Bytes::copy_from_slice(w.as_bytes()))
            .collect()
    }

    fn keys(words: &[&str]) -> Result<Vec<String>, KeyError> {
        let args = args(words);
        let spec = lookup(&args[0]).expect("known command");
        spec.keys(&args).map(|keys| {
            keys.iter()
                .map(|k| String::from_utf8(k.to_vec()).unwrap())
                .collect()
        })
    }

    #[test]
    fn lookup_ignores_case() {
        assert_eq!(lookup(b"GeT").unwrap().name, "get");
        assert!(lookup(b"nosuchcommand").is_none());
        assert!(lookup(&[0xff, 0xfe]).is_none());
    }

    #[test]
    fn single_key_commands() {
        assert_eq!(keys(&["GET", "k"]).unwrap(), ["k"]);
        assert_eq!(keys(&["SET", "k", "v", "EX", "10"]).unwrap(), ["k"]);
        assert_eq!(keys(&["HSET", "h", "f", "v"]).unwrap(), ["h"]);
        assert_eq!(keys(&["OBJECT", "ENCODING", "k"]).unwrap(), ["k"]);
        assert_eq!(keys(&["XGROUP", "CREATE", "s", "g", "$"]).unwrap(), ["s"]);
    }

    #[test]
    fn multi_key_ranges_and_steps() {
        assert_eq!(keys(&["MGET", "a", "b", "c"]).unwrap(), ["a", "b", "c"]);
        assert_eq!(keys(&["DEL", "a", "b"]).unwrap(), ["a", "b"]);
        assert_eq!(keys(&["MSET", "a", "1", "b", "2"]).unwrap(), ["a", "b"]);
        assert_eq!(keys(&["RENAME", "a", "b"]).unwrap(), ["a", "b"]);
        assert_eq!(
            keys(&["BITOP", "AND", "d", "a", "b"]).unwrap(),
            ["d", "a", "b"]
        );
        assert_eq!(
            keys(&["LMOVE", "a", "b", "LEFT", "RIGHT"]).unwrap(),
            ["a", "b"]
        );
    }

    #[test]
    fn numkeys_commands() {
        assert_eq!(
            keys(&["EVAL", "return 1", "2", "a", "b", "x"]).unwrap(),
            ["a", "b"]
        );
        assert!(keys(&["EVALSHA", "abc", "0"]).unwrap().is_empty());
        assert_eq!(keys(&["EVAL", "s", "3", "a"]), Err(KeyError::NumKeys));
        assert_eq!(keys(&["EVAL", "s", "x", "a"]), Err(KeyError::NumKeys));
        assert_eq!(
            keys(&["ZUNIONSTORE", "d", "2", "a", "b", "WEIGHTS", "1", "2"]).unwrap(),
            ["d", "a", "b"]
        );
        assert_eq!(keys(&["ZUNION", "2", "a", "b"]).unwrap(), ["a", "b"]);
        assert_eq!(keys(&["LMPOP", "2", "a", "b", "LEFT"]).unwrap(), ["a", "b"]);
        assert_eq!(keys(&["SINTERCARD", "1", "a"]).unwrap(), ["a"]);
    }

    #[test]
    fn sort_and_streams() {
        assert_eq!(keys(&["SORT", "l", "ALPHA"]).unwrap(), ["l"]);
        assert_eq!(keys(&["SORT", "l", "STORE", "d"]).unwrap(), ["l", "d"]);
        assert!(matches!(
            keys(&["SORT", "l", "BY", "w_*"]),
            Err(KeyError::Refused(_))
        ));
        assert_eq!(
            keys(&["XREAD", "COUNT", "2", "STREAMS", "a", "b", "0", "0"]).unwrap(),
            ["a", "b"]
        );
        assert!(matches!(
            keys(&["XREAD", "BLOCK", "0", "STREAMS", "a", "0"]),
            Err(KeyError::Refused(_))
        ));
        assert!(matches!(
            keys(&["XREAD", "STREAMS", "a", "b", "0"]),
            Err(KeyError::Refused(_))
        ));
    }

    #[test]
    fn arity_is_checked() {
        assert_eq!(keys(&["GET"]), Err(KeyError::Arity("get")));
        assert_eq!(keys(&["GET", "a", "b"]), Err(KeyError::Arity("get")));
        assert_eq!(keys(&["MSET", "a"]), Err(KeyError::Arity("mset")));
        assert_eq!(keys(&["MSET", "a", "1", "b"]), Err(KeyError::Arity("mset")));
        assert_eq!(
            KeyError::Arity("get").to_string(),
            "ERR wrong number of arguments for 'get' command"
        );
    }

    #[test]
    fn access_and_kinds() {
        assert_eq!(lookup(b"get").unwrap().access(), Some(Access::Read));
        assert_eq!(lookup(b"incr").unwrap().access(), Some(Access::Write));
        assert_eq!(
            lookup(b"ping").unwrap().kind,
            Kind::Scatter(ScatterCmd::Ping)
        );
        assert_eq!(lookup(b"quit").unwrap().kind, Kind::Local(LocalCmd::Quit));
        assert!(matches!(
            lookup(b"blpop").unwrap().kind,
            Kind::Unsupported(Some(_))
        ));
        assert!(matches!(
            lookup(b"flushall").unwrap().kind,
            Kind::Unsupported(_)
        ));
    }

    #[test]
    fn every_name_is_lower_case_and_unique() {
        let names: Vec<_> = data_commands()
            .into_iter()
            .chain(other_commands())
            .map(|s| s.name)
            .collect();
        assert_eq!(names.len(), all().count(), "duplicate names");
        assert!(names.iter().all(|n| *n == n.to_ascii_lowercase()));
    }

    #[test]
    fn display_name_is_sanitised() {
        let cmd = Command::new(args(&["FOO\r\nBAR"]));
        assert_eq!(cmd.display_name(), "foo??bar");
        assert_eq!(cmd.label(), "unknown");
    }
}
