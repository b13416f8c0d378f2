import Atomics
import ColonyWire
import Foundation
import Threading

/// Object ids that never repeat across restarts of one state directory (SPEC 6.2): ids are
/// handed out from blocks whose end is written to a file before the first id of the block
/// is used, so a restarted manager starts past every id its predecessor may have given and a
/// reference kept from before the restart finds nothing (NoSuchObject), never another object.
final class ObjectIDs: @unchecked Sendable {
    /// Ids reserved by one write of the file.
    static let blockSize: UInt64 = 1 << 20
    /// Ids are 56 bits on the wire (SPEC 3).
    static let maximum: UInt64 = (1 << 56) - 1

    private let file: String?
    private let next: ManagedAtomic<UInt64>
    /// Ids below this are reserved (written to the file).
    private let reserved: ManagedAtomic<UInt64>
    private let reserveLock = Lock()

    /// Ids from 1 with nothing written (tests, or a manager without a state directory).
    init() {
        file = nil
        next = ManagedAtomic(1)
        reserved = ManagedAtomic(ObjectIDs.maximum + 1)
    }

    /// Ids after the last block the file reserved; creates the file if it is missing.
    init(reservationFile path: String) throws {
        file = path
        var first: UInt64 = 1
        if FileManager.default.fileExists(atPath: path) {
            let text = try String(contentsOfFile: path, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
            guard let stored = UInt64(text), stored >= 1, stored <= ObjectIDs.maximum else {
                throw ObjectIDsError(
                    "\(path) should hold the next object id the manager may use (a decimal integer from 1), not '\(text.prefix(40))'; if it was damaged, write a number above every id a client may still keep")
            }
            first = stored
        }
        next = ManagedAtomic(first)
        reserved = ManagedAtomic(first)
        try reserve(through: first)
    }

    /// The next id. Throws when a block cannot be reserved (the file cannot be written) or
    /// every 56-bit id was used.
    func take() throws(RemoteError) -> UInt64 {
        let id = next.loadThenWrappingIncrement(ordering: .relaxed)
        guard id <= ObjectIDs.maximum else {
            throw RemoteError(.limitExceeded, "this state directory has used every object id (2^56); start the manager on a new one")
        }
        if id >= reserved.load(ordering: .acquiring) {
            do {
                try reserve(through: id)
            } catch {
                throw RemoteError(.internalError, "cannot reserve object ids in \(file ?? "the state directory"): \(error)")
            }
        }
        return id
    }

    /// Makes later ids larger than `id`, one a restart brought back (the file has covered
    /// it since it was first given, so nothing is reserved here).
    func advance(past id: UInt64) {
        var current = next.load(ordering: .relaxed)
        while current <= id {
            let (exchanged, original) = next.compareExchange(expected: current, desired: id + 1, ordering: .relaxed)
            if exchanged { return }
            current = original
        }
    }

    private func reserve(through id: UInt64) throws {
        guard let file else { return }
        try reserveLock.withLock {
            var limit = reserved.load(ordering: .relaxed)
            guard id >= limit else { return }  // another thread reserved it meanwhile
            while limit <= id { limit = min(limit + ObjectIDs.blockSize, ObjectIDs.maximum + 1) }
            try ObjectIDs.writeDurably("\(limit)\n", to: file)
            reserved.store(limit, ordering: .releasing)
        }
    }

    /// Writes a temporary file, syncs it and renames it over `path`: a crash leaves the old
    /// number or the new one, never a torn file.
    private static func writeDurably(_ text: String, to path: String) throws {
        let temporary = path + ".tmp"
        let fd = open(temporary, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
        guard fd >= 0 else { throw ObjectIDsError("cannot write \(temporary): \(String(cString: strerror(errno)))") }
        var bytes = Array(text.utf8)
        let written = Foundation.write(fd, &bytes, bytes.count)
        let synced = fsync(fd)
        close(fd)
        guard written == bytes.count, synced == 0, rename(temporary, path) == 0 else {
            throw ObjectIDsError("cannot write \(path): \(String(cString: strerror(errno)))")
        }
    }
}

/// The object-id file of a state directory is unreadable or cannot be written.
public struct ObjectIDsError: Error, CustomStringConvertible {
    public let description: String
    init(_ description: String) { self.description = description }
}
