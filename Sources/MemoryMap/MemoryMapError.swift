import Glibc

/// A misuse of a memory map, shared memory or a process-shared object: the errors Python's
/// `mmap` and `multiprocessing` report as `ValueError`, `TypeError`, `IndexError` or `OSError`.
///
/// Compare `code` with the static codes (`error.code == .readOnly`); `message` says what went
/// wrong and what to do.
public struct MemoryMapError: Error, Hashable, CustomStringConvertible {
    /// What kind of misuse happened. New codes may be added; switch with a `default`.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        private enum Base: String, Hashable, Sendable {
            case closed, readOnly, outOfRange, cannotResize, unalignedOffset, fileTooShort, invalidArgument, system
            case notOwner, wouldDeadlock, messageTooLarge, empty, full, alreadyStarted, notStarted, unknownEntryPoint, wrongType
            case overflow, shutDown
        }
        private let base: Base
        private init(_ base: Base) { self.base = base }

        /// The map or object is closed (Python: ValueError "mmap closed or invalid").
        public static let closed = Code(.closed)
        /// Writing to a read-only map (TypeError "mmap can't modify a readonly memory map").
        public static let readOnly = Code(.readOnly)
        /// An offset, index, slice or position outside the map (ValueError / IndexError).
        public static let outOfRange = Code(.outOfRange)
        /// `resize` of a read-only or copy-on-write map (TypeError).
        public static let cannotResize = Code(.cannotResize)
        /// A file offset that is not a multiple of `MemoryMap.allocationGranularity` (OSError EINVAL).
        public static let unalignedOffset = Code(.unalignedOffset)
        /// The file is shorter than the offset plus the length asked for (ValueError).
        public static let fileTooShort = Code(.fileTooShort)
        /// An argument with a bad value (ValueError).
        public static let invalidArgument = Code(.invalidArgument)
        /// Numbers whose sum does not fit an `Int`, such as `madvise`'s start plus length
        /// (OverflowError).
        public static let overflow = Code(.overflow)
        /// The operating system refused; `errno` says why (OSError).
        public static let system = Code(.system)
        /// A process-shared lock released by a thread that does not hold it (RuntimeError).
        public static let notOwner = Code(.notOwner)
        /// A thread acquiring a process-shared Lock it already holds, which would never return.
        public static let wouldDeadlock = Code(.wouldDeadlock)
        /// Shared memory opened as a different type than it was created with.
        public static let wrongType = Code(.wrongType)
        /// A message larger than the shared queue's slots (ValueError).
        public static let messageTooLarge = Code(.messageTooLarge)
        /// A shared queue had nothing to get in time (queue.Empty).
        public static let empty = Code(.empty)
        /// A shared queue had no room in time (queue.Full).
        public static let full = Code(.full)
        /// A put on a shut-down shared queue, or a get once it is shut down and empty
        /// (Python 3.13 queue.ShutDown).
        public static let shutDown = Code(.shutDown)
        /// `start()` on a process already started (AssertionError in Python).
        public static let alreadyStarted = Code(.alreadyStarted)
        /// `join()` or `terminate()` before `start()` (AssertionError in Python).
        public static let notStarted = Code(.notStarted)
        /// A child process asked to run an entry point nobody registered.
        public static let unknownEntryPoint = Code(.unknownEntryPoint)

        public var description: String { base.rawValue }
    }

    public let code: Code
    public let message: String
    /// The `errno` behind a `.system` error.
    public let errno: Int32?

    public init(_ code: Code, _ message: String, errno: Int32? = nil) {
        self.code = code
        self.message = message
        self.errno = errno
    }

    /// A `.system` error for the current `errno`.
    public static func system(_ what: String) -> MemoryMapError {
        let number = Glibc.errno
        return MemoryMapError(.system, "\(what) failed: \(String(cString: strerror(number))) (errno \(number))", errno: number)
    }

    public var description: String { "\(code): \(message)" }
}
