import ColonyWire
import Threading

/// The client's side of SPEC 6.2: for each object this session received, how many times it
/// arrived since the last release, how many of those still wait to become proxies, and how
/// many proxy handles use it. The manager holds one reference per object for the session;
/// the last handle to go releases it with the count seen, so an answer still on its way
/// keeps the object alive.
final class ReferenceLedger: @unchecked Sendable {
    private struct Entry {
        var seen: UInt64 = 0
        /// Received and not yet made into a handle: while any wait, no release is sent.
        var undecoded: UInt64 = 0
        var handles = 0
    }

    private let lock = Lock()
    private var entries: [UInt64: Entry] = [:]  // guarded by lock

    /// An answer arrived (on the event loop, before anyone decodes it): counts each
    /// reference inside.
    func received(_ value: WireValue) {
        let ids = value.objectIDs
        guard !ids.isEmpty else { return }
        lock.withLock {
            for id in ids {
                entries[id, default: Entry()].seen += 1
                entries[id, default: Entry()].undecoded += 1
            }
        }
    }

    /// A proxy handle of `id` was made (from a received reference, if one waits).
    func opened(_ id: UInt64) {
        lock.withLock {
            var entry = entries[id, default: Entry()]
            if entry.undecoded > 0 { entry.undecoded -= 1 }
            entry.handles += 1
            entries[id] = entry
        }
    }

    /// A proxy handle of `id` went away. Returns the count to release with when it was the
    /// last and no received copy waits to be decoded; nil when the object stays held.
    func closed(_ id: UInt64) -> UInt64? {
        lock.withLock {
            guard var entry = entries[id] else { return nil }
            entry.handles -= 1
            guard entry.handles <= 0, entry.undecoded == 0 else {
                entries[id] = entry
                return nil
            }
            entries[id] = nil
            return entry.seen
        }
    }
}
