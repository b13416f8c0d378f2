import ArgumentParser
import Colony
import ColonyObservability
import ColonyServer
import Foundation

/// `colony status`: what a manager holds and who is connected.
struct StatusCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "status", abstract: "Connect to a manager and print its objects, sessions and counters.")

    @OptionGroup var connection: ConnectionOptions

    @Flag(help: "Print the raw status as JSON.")
    var json = false

    @Flag(help: "Print only the URL that opens the manager's dashboard (its --http-listen), with the token it needs off loopback.")
    var dashboardURL = false

    func run() async throws {
        let manager = try await connection.connect()
        let status = try await manager.status()
        await manager.close()
        if dashboardURL {
            guard let url = status["dashboard"]?.stringValue else {
                throw ValidationError("this manager serves no dashboard: start it with --http-listen HOST:PORT")
            }
            print(url + "?token=" + DashboardAccess.token(authKey: try connection.credentials().1))
            return
        }
        if json {
            print(String(decoding: try status.jsonData(pretty: true), as: UTF8.self))
            return
        }
        let instance = status["instance"]?.bytesValue.map { AuthKey.hex($0) } ?? "?"
        print("manager \(status["version"]?.stringValue ?? "?"), instance \(instance), up \(Int(status["uptime"]?.doubleValue ?? 0)) s")
        if let memory = status["memory"], let used = memory["used"]?.int64Value, let limit = memory["limit"]?.int64Value {
            let mebibytes = { (bytes: Int64) in String(format: "%.1f MiB", Double(bytes) / 1_048_576) }
            print(
                "memory \(mebibytes(used)) of \(mebibytes(limit)) (--max-memory), partial messages \(mebibytes(memory["partial"]?.int64Value ?? 0)), requests refused \(memory["refused"]?.int64Value ?? 0)"
            )
        }
        if let persistence = status["persistence"], let mode = persistence["mode"]?.stringValue {
            let failure = persistence["failure"]?.stringValue.map { "; FAILING: \($0)" } ?? ""
            let figure = { (key: String) in persistence[key]?.plainText ?? "?" }
            print(
                "persist \(mode): journal \(figure("bytes")) bytes, \(figure("records")) records since start, \(figure("syncs")) syncs, last sync \(String(format: "%.2f", persistence["last_sync_ms"]?.doubleValue ?? 0)) ms; snapshot \(figure("snapshot_bytes")) bytes, \(Int(persistence["snapshot_age"]?.doubleValue ?? 0)) s old, \(figure("compactions")) compactions\(failure)"
            )
        } else {
            print("persist off")
        }
        let objects = status["objects"]?.arrayValue ?? []
        print("\nobjects (\(objects.count))")
        printTable(
            ["ID", "TYPE", "NAME", "SIZE", "WAITING", "REFS"],
            objects.map { row in ["id", "type", "name", "size", "waiting", "refs"].map { row[$0]?.plainText ?? "" } })
        let sessions = status["sessions"]?.arrayValue ?? []
        print("\nsessions (\(sessions.count))")
        printTable(
            ["ID", "ROLE", "PEER", "AGENT", "REQUESTS", "OBJECTS"],
            sessions.map { row in ["id", "role", "peer", "agent", "requests", "objects"].map { row[$0]?.plainText ?? "" } })
        for pool in status["pools"]?.arrayValue ?? [] {
            let name = pool["name"]?.stringValue ?? "#\(pool["id"]?.plainText ?? "?")"
            let figures = ["queued", "running", "done", "failed", "retried"].map { "\($0) \(pool[$0]?.plainText ?? "0")" }
            print("\npool \(name): " + figures.joined(separator: ", "))
            let workers = pool["workers"]?.arrayValue ?? []
            printTable(
                ["NODE", "PID", "PROCESSES", "BUSY", "CAPACITY", "DONE", "TASKS"],
                workers.map { row in
                    ["node", "pid", "processes", "busy", "capacity", "done"].map { row[$0]?.plainText ?? "" }
                        + [(row["tasks"]?.arrayValue ?? []).map(\.plainText).joined(separator: ",") + (row["draining"]?.boolValue == true ? " (draining)" : "")]
                })
        }
        print("\ncounters")
        for pair in status["counters"]?.mapValue ?? [] {
            print("  \(pair.key.plainText): \(pair.value.plainText)")
        }
    }

    func printTable(_ header: [String], _ rows: [[String]]) {
        let widths = header.indices.map { column in ([header] + rows).map { $0[column].count }.max() ?? 0 }
        for row in [header] + rows {
            print("  " + row.enumerated().map { $1.padding(toLength: widths[$0], withPad: " ", startingAt: 0) }.joined(separator: "  "))
        }
    }
}
