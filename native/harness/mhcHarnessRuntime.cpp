// mode run, runtime phase (step 6): the engine's plugin from the serialized
// fields, attached to execution contexts, and (with a GPU) enqueued every way
// TensorRT may run it, the outputs compared bit for bit and written for pytest.
#include "mhcHarnessRun.h"

namespace mhcHarness
{
namespace
{
// The ways TensorRT may run one enqueue: the engine's plugin (its output is
// checked against the reference by pytest), a clone of the build plugin,
// the engine's plugin captured in a CUDA graph, and two contexts on two
// threads at once. Every way must give the same bits.
enum Way
{
    kMAIN,
    kCLONE,
    kGRAPH,
    kTHREAD_A,
    kTHREAD_B,
    kWAYS
};
char const* const wayName[kWAYS]
    = {"engine plugin", "build-time clone", "CUDA graph capture", "thread A (context 1)", "thread B (context 2)"};

// Two execution contexts of one engine, each with its own stream and workspace.
struct Contexts
{
    IPluginV3OneRuntime* rt{nullptr};      // context 1, the engine's plugin
    IPluginV3OneRuntime* rt2{nullptr};     // context 2
    IPluginV3OneRuntime* cloneRt{nullptr}; // the build-time clone
    cudaStream_t stream{};
    cudaStream_t stream2{};
    void* workspace{nullptr};
    void* workspace2{nullptr};
};

// One T's tensors: descriptors, device inputs and one set of outputs per way.
struct Buffers
{
    std::vector<PluginTensorDesc> in, out;
    std::vector<void*> dIn;
    std::vector<std::vector<void*>> dOut;
    std::vector<size_t> outBytes;
};

// DIR/T<t>.<input>.bin, each holding exactly its tensor's bytes, onto the device.
int loadInputs(RunCase const& rc, int64_t t, std::string const& tt, Buffers& b)
{
    std::vector<void*>& dIn = b.dIn; // the names CUDA_CHECK prints
    for (int32_t i = 0; i < rc.nbIn; ++i)
    {
        size_t const bytes = static_cast<size_t>(volume(b.in[i].dims)) * elemSize(b.in[i].type);
        std::string const path = rc.a.dir + "/T" + std::to_string(t) + "." + rc.op->inputs[i].name + ".bin";
        std::ifstream f(path, std::ios::binary);
        std::vector<char> host(bytes);
        f.read(host.data(), static_cast<std::streamsize>(bytes));
        if (!f || f.peek() != EOF)
        {
            check(false, tt + ": input " + path + " must hold exactly " + std::to_string(bytes) + " bytes");
            return 1;
        }
        CUDA_CHECK(cudaMalloc(&dIn[i], std::max<size_t>(bytes, 1)));
        CUDA_CHECK(cudaMemcpy(dIn[i], host.data(), bytes, cudaMemcpyHostToDevice));
    }
    return 0;
}

int allocPoisonedOutputs(RunCase const& rc, Buffers& b)
{
    std::vector<std::vector<void*>>& dOut = b.dOut; // the names CUDA_CHECK prints
    std::vector<size_t>& outBytes = b.outBytes;
    for (int32_t o = 0; o < rc.nbOut; ++o)
    {
        outBytes[o] = static_cast<size_t>(volume(b.out[o].dims)) * elemSize(b.out[o].type);
        for (int w = 0; w < kWAYS; ++w)
        {
            CUDA_CHECK(cudaMalloc(&dOut[w][o], std::max<size_t>(outBytes[o], 1)));
            // NaN in every dtype: all-ones bytes; an unwritten element stays so.
            CUDA_CHECK(cudaMemset(dOut[w][o], 0xFF, outBytes[o]));
        }
    }
    return 0;
}

// onShapeChange and enqueue into way w's outputs, then wait: 0, the enqueue's
// status, -1 (onShapeChange failed) or -2 (the stream reported an error).
int32_t enqueueOn(RunCase const& rc, Buffers& b, IPluginV3OneRuntime* r, cudaStream_t st, void* ws, int w)
{
    if (r->onShapeChange(b.in.data(), rc.nbIn, b.out.data(), rc.nbOut) != 0)
    {
        return -1;
    }
    int32_t const e = r->enqueue(b.in.data(), b.out.data(), b.dIn.data(), b.dOut[w].data(), ws, st);
    return e != 0 ? e : (cudaStreamSynchronize(st) == cudaSuccess ? 0 : -2);
}

// The engine's plugin captured in a CUDA graph, then the graph replayed.
int enqueueCaptured(RunCase const& rc, std::string const& tt, Buffers& b, Contexts const& c)
{
    check(c.rt->onShapeChange(b.in.data(), rc.nbIn, b.out.data(), rc.nbOut) == 0, tt + ": onShapeChange before capture");
    cudaGraph_t graph = nullptr;
    cudaGraphExec_t exec = nullptr;
    cudaStream_t const stream = c.stream; // the name CUDA_CHECK prints
    CUDA_CHECK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal));
    int32_t const e = c.rt->enqueue(b.in.data(), b.out.data(), b.dIn.data(), b.dOut[kGRAPH].data(), c.workspace, stream);
    cudaError_t const endErr = cudaStreamEndCapture(stream, &graph);
    bool ok = e == 0 && endErr == cudaSuccess && graph != nullptr && cudaGraphInstantiate(&exec, graph, 0) == cudaSuccess
        && cudaGraphLaunch(exec, stream) == cudaSuccess && cudaStreamSynchronize(stream) == cudaSuccess;
    check(ok, tt + ": enqueue captured in a CUDA graph (" + cudaGetErrorString(endErr) + "), replayed");
    cudaGetLastError();
    if (exec)
    {
        cudaGraphExecDestroy(exec);
    }
    if (graph)
    {
        cudaGraphDestroy(graph);
    }
    return 0;
}

// Every element of the main way's outputs written, every way's bits equal to
// it, and the main way's outputs written to DIR/T<t>.<output>.out.bin.
int compareAndWrite(RunCase const& rc, int64_t t, std::string const& tt, Buffers& b)
{
    std::vector<std::vector<void*>> const& dOut = b.dOut; // the names CUDA_CHECK prints
    std::vector<size_t> const& outBytes = b.outBytes;
    std::vector<std::vector<uint8_t>> host(kWAYS);
    for (int32_t o = 0; o < rc.nbOut; ++o)
    {
        for (int w = 0; w < kWAYS; ++w)
        {
            host[w].resize(outBytes[o]);
            CUDA_CHECK(cudaMemcpy(host[w].data(), dOut[w][o], outBytes[o], cudaMemcpyDeviceToHost));
        }
        size_t const es = elemSize(b.out[o].type);
        size_t unwritten = 0;
        for (size_t e = 0; e < host[kMAIN].size(); e += es)
        {
            bool allOnes = true;
            for (size_t k = 0; k < es; ++k)
            {
                allOnes = allOnes && host[kMAIN][e + k] == 0xFF;
            }
            unwritten += allOnes;
        }
        std::string const name = rc.op->outputs[o].name;
        check(unwritten == 0,
            tt + ": every element of " + name + " written (" + std::to_string(unwritten) + " of "
                + std::to_string(host[kMAIN].size() / es) + " still poison)");
        for (int w = kCLONE; w < kWAYS; ++w)
        {
            check(host[w] == host[kMAIN],
                tt + ": " + name + " from the " + wayName[w] + " has the same bits as the " + wayName[kMAIN]);
        }
        std::string const path = rc.a.dir + "/T" + std::to_string(t) + "." + name + ".out.bin";
        std::ofstream f(path, std::ios::binary);
        f.write(reinterpret_cast<char const*>(host[kMAIN].data()), static_cast<std::streamsize>(host[kMAIN].size()));
        check(static_cast<bool>(f), tt + ": wrote " + path);
    }
    return 0;
}

// One T: the inputs from DIR, every way of enqueueing, the comparison.
int enqueueEveryWay(RunCase const& rc, std::vector<DynamicPluginTensorDesc> const& io, int64_t t, Contexts const& c)
{
    std::string const tt = rc.tag + " T=" + std::to_string(t);
    Buffers b;
    descsAt(rc, io, t, b.in, b.out);
    b.dIn.assign(rc.nbIn, nullptr);
    b.dOut.assign(kWAYS, std::vector<void*>(rc.nbOut, nullptr));
    b.outBytes.assign(rc.nbOut, 0);
    if (int const status = loadInputs(rc, t, tt, b))
    {
        return status;
    }
    if (int const status = allocPoisonedOutputs(rc, b))
    {
        return status;
    }
    CUDA_CHECK(cudaDeviceSynchronize());
    check(enqueueOn(rc, b, c.rt, c.stream, c.workspace, kMAIN) == 0, tt + ": onShapeChange + enqueue return 0");
    check(enqueueOn(rc, b, c.cloneRt, c.stream, c.workspace, kCLONE) == 0, tt + ": enqueue through the build-time clone");
    if (int const status = enqueueCaptured(rc, tt, b, c))
    {
        return status;
    }
    {
        int32_t ra = -9, rb = -9;
        std::thread ta([&] { ra = enqueueOn(rc, b, c.rt, c.stream, c.workspace, kTHREAD_A); });
        std::thread tb([&] { rb = enqueueOn(rc, b, c.rt2, c.stream2, c.workspace2, kTHREAD_B); });
        ta.join();
        tb.join();
        check(ra == 0 && rb == 0, tt + ": two execution contexts enqueue on two threads at once");
    }
    CUDA_CHECK(cudaGetLastError());
    if (int const status = compareAndWrite(rc, t, tt, b))
    {
        return status;
    }
    for (void* p : b.dIn)
    {
        cudaFree(p);
    }
    for (auto& v : b.dOut)
    {
        for (void* p : v)
        {
            cudaFree(p);
        }
    }
    return 0;
}

// Streams and workspaces of both contexts; the workspaces hold garbage.
int allocContexts(size_t wsBytes, Contexts* c)
{
    // Named as CUDA_CHECK prints them.
    cudaStream_t& stream = c->stream;
    cudaStream_t& stream2 = c->stream2;
    void*& workspace = c->workspace;
    void*& workspace2 = c->workspace2;
    CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
    CUDA_CHECK(cudaStreamCreateWithFlags(&stream2, cudaStreamNonBlocking));
    if (wsBytes)
    {
        CUDA_CHECK(cudaMalloc(&workspace, wsBytes));
        CUDA_CHECK(cudaMalloc(&workspace2, wsBytes));
        // Garbage, not zeros: the kernels must not rely on a cleared workspace.
        CUDA_CHECK(cudaMemset(workspace, 0xA5, wsBytes));
        CUDA_CHECK(cudaMemset(workspace2, 0x5A, wsBytes));
    }
    return 0;
}

// With a GPU: a second context, then every T enqueued every way.
int runOnGpu(RunCase const& rc, BuildResult& built, IPluginV3OneRuntime* engRt, IPluginV3OneRuntime* rt,
    IPluginV3* ctxPlugin, IPluginV3* engPlugin)
{
    // A second execution context of the same engine: its own plugin, its own
    // stream and workspace, run on another thread at the same time.
    HarnessResourceContext resCtx2;
    IPluginV3* ctxPlugin2 = engRt->attachToContext(&resCtx2);
    Contexts c;
    c.rt = rt;
    c.cloneRt = built.cloneRt;
    c.rt2 = ctxPlugin2
        ? capability<IPluginV3OneRuntime>(ctxPlugin2, PluginCapabilityType::kRUNTIME, "PLUGIN_V3ONE_RUNTIME")
        : nullptr;
    check(c.rt2 != nullptr, rc.tag + ": a second attachToContext (second execution context)");
    if (!c.rt2)
    {
        return 1;
    }
    if (int const status = allocContexts(built.wsBytes, &c))
    {
        return status;
    }
    for (int64_t t : rc.a.ts)
    {
        if (int const status = enqueueEveryWay(rc, built.io, t, c))
        {
            return status;
        }
    }
    cudaFree(c.workspace);
    cudaFree(c.workspace2);
    cudaStreamDestroy(c.stream);
    cudaStreamDestroy(c.stream2);
    delete built.clone;
    delete ctxPlugin2;
    delete ctxPlugin;
    delete engPlugin;
    return gFailures ? 1 : 0;
}
// Every tied input dim (T included) changed alone at run time is refused by
// onShapeChange: the plugins' rule that every dim code has one value across the inputs.
void checkShapeChangeRefusals(RunCase const& rc, IPluginV3OneRuntime* rt, std::vector<PluginTensorDesc> const& in,
    std::vector<PluginTensorDesc> const& out)
{
    std::string accepted;
    int cases = 0;
    for (int32_t i = 0; i < rc.nbIn; ++i)
    {
        for (int32_t k = 0; k < in[i].dims.nbDims; ++k)
        {
            if (!tied(*rc.op, rc.op->inputs[i].shape[k], true))
            {
                continue;
            }
            std::vector<PluginTensorDesc> bad(in);
            bad[i].dims.d[k] += 1;
            gLogger.takeMessages();
            if (rt->onShapeChange(bad.data(), rc.nbIn, out.data(), rc.nbOut) == 0)
            {
                accepted += " " + std::string(rc.op->inputs[i].name) + "[" + std::to_string(k) + "]";
            }
            ++cases;
        }
    }
    gLogger.takeMessages();
    check(cases > 0 && accepted.empty(),
        rc.tag + ": onShapeChange refuses each of " + std::to_string(cases) + " input dims changed alone"
            + (accepted.empty() ? "" : "; accepted:" + accepted));
}
} // namespace

int runRuntimePhase(RunCase const& rc, IPluginCreatorV3One* creator, FieldSet& serialized, BuildResult& built)
{
    IPluginV3* engPlugin = creator->createPlugin("harness_layer", serialized.get(), TensorRTPhase::kRUNTIME);
    check(engPlugin != nullptr, rc.tag + ": createPlugin (runtime phase) from serialized fields");
    if (!engPlugin)
    {
        return 1;
    }
    auto* engRt = capability<IPluginV3OneRuntime>(engPlugin, PluginCapabilityType::kRUNTIME, "PLUGIN_V3ONE_RUNTIME");
    HarnessResourceContext resCtx;
    IPluginV3* ctxPlugin = engRt ? engRt->attachToContext(&resCtx) : nullptr;
    check(ctxPlugin != nullptr && ctxPlugin != engPlugin, rc.tag + ": attachToContext returns a new plugin");
    if (!ctxPlugin)
    {
        delete engPlugin;
        return 1;
    }
    auto* rt = capability<IPluginV3OneRuntime>(ctxPlugin, PluginCapabilityType::kRUNTIME, "PLUGIN_V3ONE_RUNTIME");
    if (!rt)
    {
        return 1;
    }
    {
        // TensorRT calls onShapeChange at the profile's kOPT shape while timing,
        // on the build plugin's clones as on the engine's.
        std::vector<PluginTensorDesc> in, out;
        descsAt(rc, built.io, rc.optT, in, out);
        check(rt->onShapeChange(in.data(), rc.nbIn, out.data(), rc.nbOut) == 0,
            rc.tag + ": onShapeChange at kOPT T=" + std::to_string(rc.optT));
        check(built.cloneRt->onShapeChange(in.data(), rc.nbIn, out.data(), rc.nbOut) == 0,
            rc.tag + ": onShapeChange at kOPT T=" + std::to_string(rc.optT) + " on the build clone");
        checkShapeChangeRefusals(rc, rt, in, out);
    }
    if (rc.a.gpu)
    {
        return runOnGpu(rc, built, engRt, rt, ctxPlugin, engPlugin);
    }
    for (int64_t t : rc.a.ts)
    {
        std::vector<PluginTensorDesc> in, out;
        descsAt(rc, built.io, t, in, out);
        check(rt->onShapeChange(in.data(), rc.nbIn, out.data(), rc.nbOut) == 0,
            rc.tag + ": onShapeChange T=" + std::to_string(t));
    }
    delete built.clone;
    delete ctxPlugin;
    delete engPlugin;
    return gFailures ? 1 : 0;
}
} // namespace mhcHarness
