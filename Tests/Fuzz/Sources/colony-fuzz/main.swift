import ColonyServer
import ColonyWire
import NIOCore

// One harness, five targets, chosen by the input's first byte:
//   0: the MessagePack value decoder (and the canonical round trip of what it accepts), and
//      the scanner that checks a pool's results without decoding them (it must accept
//      exactly what the decoder accepts),
//   1: the frame decoder and message assembler with a small size limit, and requests read
//      from the messages (the manager's shortcut against the general decoder),
//   2: the manager's side of the handshake, fed frames cut from the input,
//   3: the object store, fed method calls whose arguments (references inside values
//      included) come from the input; afterwards every reference is given back and
//      nothing may be left,
//   4: a persistence journal file as a crash or a disk could leave it: read (a damaged
//      tail is cut, never trusted) and replayed into a store, which must then serve its
//      objects.
// Any crash, hang, or allocation beyond libFuzzer's -malloc_limit_mb is a finding.

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOneInput(_ start: UnsafeRawPointer, _ count: Int) -> CInt {
    guard count > 0 else { return 0 }
    let bytes = UnsafeRawBufferPointer(start: start, count: count)
    let input = ByteBuffer(bytes: bytes.dropFirst())
    switch bytes[0] % 5 {
    case 0: fuzzValueDecoder(input)
    case 1: fuzzFrames(input)
    case 2: fuzzServerHandshake(input)
    case 3: fuzzObjectStore(input)
    default: fuzzJournal(input)
    }
    return 0
}

func fuzzValueDecoder(_ input: ByteBuffer) {
    var buffer = input
    guard let value = try? buffer.readWireValue(limits: WireLimits(maxDepth: 32)) else { return }
    // Whatever decodes must re-encode canonically and decode to the same value.
    let encoded = value.encoded()
    let again = try? WireValue(messagePack: encoded.readableBytesView, limits: WireLimits(maxDepth: 32))
    precondition(again == value || value.containsNaN, "round trip changed \(value)")
    precondition(encoded.readableBytes <= input.readableBytes * 2 + 16, "re-encoding grew far beyond the input")
    checkScanner(input)
}

/// A task result whose one result is the input: scanning must accept it exactly when
/// decoding does, and keep the same value.
func checkScanner(_ input: ByteBuffer) {
    var array = ByteBuffer(bytes: [0x91])
    array.writeImmutableBuffer(input)
    let decoded = try? WireValue(messagePack: array.readableBytesView)
    var body = ByteBuffer(bytes: [0x81])
    body.writeWireValue("results")
    body.writeImmutableBuffer(array)
    let scanned = try? TaskResult(body: body)
    precondition((decoded?.arrayValue != nil) == (scanned != nil), "the scanner and the decoder disagree on \(Array(input.readableBytesView))")
    if let decoded, let scanned {
        precondition(scanned.results.values.map { $0.encoded() } == (decoded.arrayValue ?? []).map { $0.encoded() }, "the scanner kept other values")
    }
}

func fuzzFrames(_ input: ByteBuffer) {
    var buffer = input
    var decoder = FrameDecoder(maxBodySize: 512)
    var assembler = MessageAssembler(maxMessageSize: 2048, maxBufferedBytes: 4096)
    while let frame = try? decoder.decode(buffer: &buffer) {
        guard let message = try? assembler.receive(frame) else { continue }
        if message.kind == .request { checkRequest(message.body) }
        if message.kind == .error, let value = try? message.value() {
            _ = try? RemoteError(wireValue: value)
        }
    }
}

/// The manager reads calls through a shortcut: it must agree with decoding the value, and a
/// client's direct encoding of what it read must equal the general one.
func checkRequest(_ body: ByteBuffer) {
    let general = (try? Frame(kind: .request, requestID: 1, body: body).value()).flatMap { try? Request(wireValue: $0) }
    let read = try? Request(body: body)
    // Compared as bytes: NaN arguments are not equal to themselves.
    precondition(general?.wireValue.encoded() == read?.wireValue.encoded(), "Request(body:) disagrees with the general path")
    guard let read else { return }
    var direct = ByteBuffer()
    direct.writeRequest(read, requestID: 1, maxFrameBody: 64)
    var viaValue = ByteBuffer()
    viaValue.writeMessage(kind: .request, requestID: 1, value: read.wireValue, maxFrameBody: 64)
    precondition(direct == viaValue, "a request's direct encoding differs from its value's")
}

let fuzzConfiguration = HandshakeConfiguration(
    authKey: try! AuthKey(Array(repeating: 7, count: 32)), failureDelayNanoseconds: 0,
    makeNonce: { Array(repeating: 9, count: 32) })

func fuzzServerHandshake(_ input: ByteBuffer) {
    var buffer = input
    var server = ServerHandshake(configuration: fuzzConfiguration, sessionID: 1, now: 0)
    var now: UInt64 = 0
    while let frame = try? buffer.readFrame(maxBodySize: 1024) {
        now += 1
        switch server.receive(frame, now: now) {
        case .send: continue
        case .established, .failed: return
        }
    }
}

/// Methods the store target calls: containers' writes and reads, which store, hand out and
/// drop references.
let storeMethods = [
    "setitem", "getitem", "pop", "update", "append", "extend", "insert", "add", "mul", "imul", "setattr",
    "getattr", "set", "get", "put", "put_many", "get_many", "task_done", "copy", "clear", "get_lock", "discard", "or", "fromkeys",
]

func fuzzObjectStore(_ input: ByteBuffer) {
    // The budget sizes what objects may store; answers built from them (a copy, a sum, a
    // repetition) take as much again, so it stays well under libFuzzer's -malloc_limit_mb.
    let store = ObjectStore(maxObjects: 64, budget: MemoryBudget(limit: 2 << 20) { 0 })
    let types: [ObjectType] = [.dict, .list, .set, .namespace, .value, .queue]
    // Ids 1...6, which references in the input can name (with right or wrong type codes).
    let objects = types.compactMap { try? store.create(type: $0, name: nil, options: .null) }
    precondition(objects.count == types.count, "the store refused its first objects")
    var buffer = input
    while let target = buffer.readInteger(as: UInt8.self), let method = buffer.readInteger(as: UInt8.self),
        let arguments = try? buffer.readWireValue(limits: WireLimits(maxDepth: 16))
    {
        let object = objects[Int(target) % objects.count]
        let values = arguments.arrayValue ?? [arguments]
        guard let answer = try? store.call(object: object.id, method: storeMethods[Int(method) % storeMethods.count], arguments: values)
        else { continue }
        store.release(answer.objectIDs)  // the caller's references to what it received
    }
    store.release(objects.map(\.id))
    store.collectCycles()
    precondition(store.count == 0, "\(store.count) objects outlived every reference")
}

/// The journal's header, then the input as records (a body, framed with its length and
/// checksum so that most inputs reach the replay) or, if its first byte is odd, raw bytes.
func fuzzJournal(_ input: ByteBuffer) {
    var bytes = Array("COLONYJ1".utf8)
    var rest = input
    guard let mode = rest.readInteger(as: UInt8.self) else { return }
    if mode & 1 == 1 {
        bytes += rest.readableBytesView
    } else {
        while let length = rest.readInteger(as: UInt8.self), let body = rest.readSlice(length: min(Int(length), rest.readableBytes)) {
            var framed = ByteBuffer()
            JournalFile.writeRecord(bytes: body, into: &framed)
            bytes += framed.readableBytesView
        }
    }
    guard let contents = try? JournalFile.parse(bytes, path: "fuzz") else { return }
    precondition(contents.validBytes + contents.droppedBytes == bytes.count, "the journal's parts do not add up")
    let store = ObjectStore(maxObjects: 64, budget: MemoryBudget(limit: 2 << 20) { 0 })
    _ = store.restore(contents.records)
    // Whatever came back is counted and answers its calls.
    let rows = store.describeObjects().arrayValue ?? []
    precondition(rows.count == store.count, "the store counts \(store.count) objects but lists \(rows.count)")
    for row in rows {
        guard let id = row["id"]?.uint64Value else { continue }
        _ = try? store.call(object: id, method: "len", arguments: [])
    }
}

extension WireValue {
    /// NaN is not equal to itself, so round trips of NaN compare by bits elsewhere.
    var containsNaN: Bool {
        switch self {
        case .double(let number): number.isNaN
        case .array(let elements): elements.contains { $0.containsNaN }
        case .map(let pairs): pairs.contains { $0.key.containsNaN || $0.value.containsNaN }
        default: false
        }
    }
}

// SwiftPM links executables with `main` aliased to `colony_fuzz_main`; hand control to
// libFuzzer's driver from there.
@_silgen_name("LLVMFuzzerRunDriver")
func runFuzzerDriver(
    _ argc: UnsafeMutablePointer<CInt>,
    _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>,
    _ callback: @convention(c) (UnsafeRawPointer, Int) -> CInt
) -> CInt

@_cdecl("colony_fuzz_main")
public func colonyFuzzMain(
    _ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?
) -> CInt {
    var count = argc
    var arguments = argv
    return runFuzzerDriver(&count, &arguments) { fuzzOneInput($0, $1) }
}
