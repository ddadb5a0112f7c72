// The allow-list edge written for nginx's njs (0.7, Debian's libnginx-mod-http-js): a PROTOTYPE measured beside the
// Python edge in benchmarks/edge_bench.py, never served by inferline. It does for a JSON inference body what
// serving/gateway.py build_infer_request does (fields and parameters by allow-list, datatypes, shapes against the
// data, element types and ranges), then sends Triton the request it built through an nginx subrequest with no
// caller header. Left out, so its figure is a lower bound on what the design would cost: the binary tensor
// extension, API keys, the admission queue, the public-pipeline check and the metrics. Known flaw of the design:
// JSON.parse reads every number as a double, so an INT64 beyond 2**53 would be changed in the rebuilt request
// (refused here instead), and duplicate keys cannot be seen.

var ITEM = {BOOL: 1, UINT8: 1, UINT16: 2, UINT32: 4, UINT64: 8, INT8: 1, INT16: 2, INT32: 4, INT64: 8,
            FP16: 2, FP32: 4, FP64: 8, BYTES: 0};
var INT = {UINT8: [0, 255], UINT16: [0, 65535], UINT32: [0, 4294967295], UINT64: [0, 9007199254740991],
           INT8: [-128, 127], INT16: [-32768, 32767], INT32: [-2147483648, 2147483647],
           INT64: [-9007199254740991, 9007199254740991]};
var FLOAT = {FP16: 65504, FP32: 3.4028234663852886e38, FP64: Number.MAX_VALUE};
var NAME = /^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,127}$/;
var MAX_ELEMENTS = 1048576;
var REQUEST_FIELDS = {id: 1, parameters: 1, inputs: 1, outputs: 1};
var INPUT_FIELDS = {name: 1, datatype: 1, shape: 1, parameters: 1, data: 1};
var OUTPUT_FIELDS = {name: 1, parameters: 1};

function Refused(message) { this.message = message; }

function allowed(where, obj, fields) {
    for (var key in obj) {
        if (!fields[key]) { throw new Refused(where + " has the field '" + key + "', which the edge does not take"); }
    }
}

function flat(data, out, depth) {
    if (depth > 32) { throw new Refused("input 'data' is nested more than 32 levels deep"); }
    for (var i = 0; i < data.length; i++) {
        if (Array.isArray(data[i])) { flat(data[i], out, depth + 1); } else { out.push(data[i]); }
    }
    return out;
}

function checkElements(name, datatype, values) {
    var i, v;
    if (datatype === "BOOL") {
        for (i = 0; i < values.length; i++) { if (typeof values[i] !== "boolean") { break; } }
    } else if (datatype === "BYTES") {
        for (i = 0; i < values.length; i++) { if (typeof values[i] !== "string") { break; } }
    } else if (INT[datatype]) {
        var lo = INT[datatype][0], hi = INT[datatype][1];
        for (i = 0; i < values.length; i++) {
            v = values[i];
            if (typeof v !== "number" || !Number.isInteger(v) || v < lo || v > hi) { break; }
        }
    } else {
        var top = FLOAT[datatype];
        for (i = 0; i < values.length; i++) {
            v = values[i];
            if (typeof v !== "number" || !(v >= -top && v <= top)) { break; }
        }
    }
    if (i !== values.length) { throw new Refused("input '" + name + "' is " + datatype + " but holds " + values[i]); }
}

function input(tensor, index) {
    if (typeof tensor !== "object" || tensor === null || Array.isArray(tensor)) {
        throw new Refused("inputs[" + index + "] must be a JSON object");
    }
    var name = tensor.name;
    if (typeof name !== "string" || !NAME.test(name)) { throw new Refused("inputs[" + index + "] needs a valid name"); }
    allowed("input '" + name + "'", tensor, INPUT_FIELDS);
    if (!(tensor.datatype in ITEM)) { throw new Refused("input '" + name + "' has an unknown datatype"); }
    var shape = tensor.shape, count = 1;
    if (!Array.isArray(shape)) { throw new Refused("input '" + name + "' needs 'shape' as a list of integers"); }
    for (var d = 0; d < shape.length; d++) {
        if (!Number.isInteger(shape[d]) || shape[d] < 0) { throw new Refused("input '" + name + "' has a bad shape"); }
        count *= shape[d];
    }
    if (count > MAX_ELEMENTS) { throw new Refused("input '" + name + "' declares " + count + " elements"); }
    if (tensor.parameters !== undefined) {
        throw new Refused("input '" + name + "': the binary extension is not in this prototype");
    }
    if (!Array.isArray(tensor.data)) { throw new Refused("input '" + name + "': 'data' must be a list"); }
    var values = flat(tensor.data, [], 0);
    if (values.length !== count) {
        throw new Refused("input '" + name + "' declares " + count + " elements but 'data' holds " + values.length);
    }
    checkElements(name, tensor.datatype, values);
    return {name: name, datatype: tensor.datatype, shape: shape, data: values};
}

function build(text) {
    var request;
    try { request = JSON.parse(text); } catch (e) { throw new Refused("the request body is not valid JSON"); }
    if (typeof request !== "object" || request === null || Array.isArray(request)) {
        throw new Refused("the request body must be a JSON object");
    }
    allowed("the request", request, REQUEST_FIELDS);
    var built = {};
    if (request.id !== undefined) {
        if (typeof request.id !== "string" || request.id.length > 256) { throw new Refused("'id' must be a string"); }
        built.id = request.id;
    }
    if (request.parameters !== undefined) {
        for (var key in request.parameters) {
            if (key !== "binary_data_output" || typeof request.parameters[key] !== "boolean") {
                throw new Refused("the request has the parameter '" + key + "', which the edge does not take");
            }
        }
        built.parameters = request.parameters;
    }
    if (!Array.isArray(request.inputs) || request.inputs.length === 0) {
        throw new Refused("'inputs' must be a non-empty list");
    }
    built.inputs = request.inputs.map(input);
    if (request.outputs !== undefined) {
        if (!Array.isArray(request.outputs)) { throw new Refused("'outputs' must be a list"); }
        built.outputs = request.outputs.map(function (output, index) {
            if (typeof output !== "object" || output === null || typeof output.name !== "string") {
                throw new Refused("outputs[" + index + "] must be an object with a string 'name'");
            }
            allowed("output '" + output.name + "'", output, OUTPUT_FIELDS);
            for (var key in output.parameters || {}) {
                if (key !== "binary_data" || typeof output.parameters[key] !== "boolean") {
                    throw new Refused("output '" + output.name + "' has the parameter '" + key + "'");
                }
            }
            return output.parameters ? {name: output.name, parameters: output.parameters} : {name: output.name};
        });
    }
    return JSON.stringify(built);
}

function infer(r) {
    var body;
    try {
        body = build(r.requestText || "");
    } catch (e) {
        if (!(e instanceof Refused)) { throw e; }
        r.headersOut["Content-Type"] = "application/json";
        r.return(400, JSON.stringify({error: e.message}));
        return;
    }
    r.subrequest("/triton" + r.uri, {method: "POST", body: body}, function (reply) {
        r.headersOut["Content-Type"] = reply.headersOut["Content-Type"] || "application/json";
        r.return(reply.status, reply.responseBuffer);
    });
}

export default {infer};
