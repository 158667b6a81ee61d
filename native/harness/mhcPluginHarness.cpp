// mhc_plugin_harness: drives libmhc_trt_plugins_trt<major>.so through the IPluginV3
// sequence TensorRT uses, without TensorRT. TensorRT's plugin interfaces are
// pure-virtual classes or inline wrappers over pure-virtual apiv:: classes, so
// the harness implements the TensorRT side (logger finder, expression builder,
// resource context) itself and links no libnvinfer (the link uses
// --no-undefined, so any reference into libnvinfer would fail the build).
//
//   mhc_plugin_harness LIB list
//       creators, their identity and their fields (checked against spec.py by pytest)
//   mhc_plugin_harness LIB fields
//       every creator: defaults, good values, and each bad value rejected with
//       a message naming the field, in both phases (no GPU needed)
//   mhc_plugin_harness LIB logger
//       hands the library this harness's logger finder, makes it log (a bad
//       field value) and says whether the message reached that logger; a library
//       built against another TensorRT major must refuse the finder and use stderr
//   mhc_plugin_harness LIB registry --load dlopen|loadLibrary[,dlopen|loadLibrary...]
//       plays libnvinfer's plugin registry (getPluginRegistry is exported like
//       libnvinfer's): loads the library those ways in that order and lists
//       every creator registered, with its fields
//   mhc_plugin_harness LIB run --op pre|sinkhorn|post|head --dtype float32|float16|bfloat16
//       --n N --d D --T t1,t2,... --dir DIR [--attr name=value]... [--string-fields] [--no-gpu]
//       the full lifecycle; per T reads DIR/T<t>.<input>.bin (raw, row-major) and
//       writes DIR/T<t>.<output>.out.bin. --no-gpu stops before onShapeChange/enqueue
//       buffers are touched on the device (host part of the lifecycle only).
// Exit status: 0 when every check passed, 1 when one failed, 2 on usage errors.
#include <NvInferRuntime.h>
#include <NvInferVersion.h>

#include <cuda_runtime_api.h>
#include <dlfcn.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <fstream>
#include <limits>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

using namespace nvinfer1;

// The harness stands in for libnvinfer, which exports this; the plugin library
// compares it with the TensorRT major of its own headers. MHC_HARNESS_TRT_MAJOR
// makes it claim another (1: TensorRT-RTX 1.x, which reports its own major).
extern "C" __attribute__((visibility("default"))) int32_t getInferLibMajorVersion() noexcept
{
    char const* env = std::getenv("MHC_HARNESS_TRT_MAJOR");
    return env && *env ? static_cast<int32_t>(std::strtol(env, nullptr, 10)) : NV_TENSORRT_MAJOR;
}

namespace
{
int gFailures = 0;

void check(bool ok, std::string const& what)
{
    std::printf("%s %s\n", ok ? "PASS" : "FAIL", what.c_str());
    std::fflush(stdout);
    if (!ok)
    {
        ++gFailures;
    }
}

// ---- the TensorRT side: logger and logger finder -------------------------------
class HarnessLogger : public ILogger
{
public:
    void log(Severity severity, AsciiChar const* msg) noexcept override
    {
        if (severity <= Severity::kWARNING)
        {
            mMessages.emplace_back(msg);
        }
        if (severity <= Severity::kERROR || mVerbose)
        {
            std::printf("  [plugin log %d] %s\n", static_cast<int>(severity), msg);
        }
    }
    std::string takeMessages()
    {
        std::string all;
        for (auto const& m : mMessages)
        {
            all += m + "\n";
        }
        mMessages.clear();
        return all;
    }
    bool mVerbose{false};

private:
    std::vector<std::string> mMessages;
};

class HarnessLoggerFinder : public ILoggerFinder
{
public:
    explicit HarnessLoggerFinder(ILogger* logger)
        : mLogger(logger)
    {
    }
    ILogger* findLogger() override
    {
        return mLogger;
    }

private:
    ILogger* mLogger;
};

HarnessLogger gLogger;
HarnessLoggerFinder gLoggerFinder(&gLogger);

// ---- the TensorRT side: plugin registry ----------------------------------------
// What libnvinfer's registry does for a plugin library: loadLibrary dlopens it,
// hands it the logger finder and registers what getCreators returns (failing
// when any of them is registered already); registerCreator refuses a second
// creator of the same name, version and namespace.
class HarnessRegistry : public IPluginRegistry
{
public:
    PluginLibraryHandle loadLibrary(AsciiChar const* pluginPath) noexcept override
    {
        void* h = dlopen(pluginPath, RTLD_NOW | RTLD_LOCAL);
        if (!h)
        {
            std::printf("  [registry] dlopen %s: %s\n", pluginPath, dlerror());
            return nullptr;
        }
        using SetFinder = void (*)(ILoggerFinder*);
        using GetCreators = IPluginCreatorInterface* const* (*) (int32_t&);
        auto setFinder = reinterpret_cast<SetFinder>(dlsym(h, "setLoggerFinder"));
        auto getCreators = reinterpret_cast<GetCreators>(dlsym(h, "getCreators"));
        if (!getCreators)
        {
            return nullptr;
        }
        if (setFinder)
        {
            setFinder(&gLoggerFinder);
        }
        int32_t nb = 0;
        IPluginCreatorInterface* const* list = getCreators(nb);
        bool ok = list != nullptr;
        for (int32_t i = 0; ok && i < nb; ++i)
        {
            ok = registerCreator(*list[i], "");
        }
        return ok ? h : nullptr;
    }
    void deregisterLibrary(PluginLibraryHandle) noexcept override {}
    bool registerCreator(IPluginCreatorInterface& creator, AsciiChar const* const) noexcept override
    {
        ++registerCalls;
        std::string const key = keyOf(creator);
        for (auto* c : mCreators)
        {
            if (keyOf(*c) == key)
            {
                std::printf("  [registry] %s is registered already\n", key.c_str());
                return false;
            }
        }
        mCreators.push_back(&creator);
        return true;
    }
    bool deregisterCreator(IPluginCreatorInterface const& creator) noexcept override
    {
        ++deregisterCalls;
        auto it = std::find(mCreators.begin(), mCreators.end(), &creator);
        if (it == mCreators.end())
        {
            return false;
        }
        mCreators.erase(it);
        return true;
    }
    IPluginCreatorInterface* const* getAllCreators(int32_t* const n) const noexcept override
    {
        *n = static_cast<int32_t>(mCreators.size());
        return mCreators.data();
    }
    IPluginCreatorInterface* const* getAllCreatorsRecursive(int32_t* const n) noexcept override
    {
        return getAllCreators(n);
    }
    IPluginCreatorInterface* getCreator(AsciiChar const* const name, AsciiChar const* const version,
        AsciiChar const* const ns) noexcept override
    {
        std::string const key = std::string(name) + "/" + version + "/" + (ns ? ns : "");
        for (auto* c : mCreators)
        {
            if (keyOf(*c) == key)
            {
                return c;
            }
        }
        return nullptr;
    }
    void setErrorRecorder(IErrorRecorder* const) noexcept override {}
    IErrorRecorder* getErrorRecorder() const noexcept override
    {
        return nullptr;
    }
    bool isParentSearchEnabled() const override
    {
        return false;
    }
    void setParentSearchEnabled(bool const) override {}
    IPluginResource* acquirePluginResource(AsciiChar const*, IPluginResource*) noexcept override
    {
        return nullptr;
    }
    int32_t releasePluginResource(AsciiChar const*) noexcept override
    {
        return -1;
    }
#if NV_TENSORRT_MAJOR < 11
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
    // TensorRT 10's deprecated IPluginV2 members (gone in 11): never used by the library.
    bool registerCreator(IPluginCreator&, AsciiChar const* const) noexcept override
    {
        return false;
    }
    IPluginCreator* const* getPluginCreatorList(int32_t* const n) const noexcept override
    {
        *n = 0;
        return nullptr;
    }
    IPluginCreator* getPluginCreator(AsciiChar const* const, AsciiChar const* const, AsciiChar const* const) noexcept override
    {
        return nullptr;
    }
    bool deregisterCreator(IPluginCreator const&) noexcept override
    {
        return false;
    }
#pragma GCC diagnostic pop
#endif
    // name/version/namespace of a V3 creator ("?" for another interface).
    static std::string keyOf(IPluginCreatorInterface const& c)
    {
        if (std::strcmp(c.getInterfaceInfo().kind, "PLUGIN CREATOR_V3ONE") != 0)
        {
            return "?";
        }
        auto const& v3 = static_cast<IPluginCreatorV3One const&>(c);
        return std::string(v3.getPluginName()) + "/" + v3.getPluginVersion() + "/" + v3.getPluginNamespace();
    }
    int32_t registerCalls{0};
    int32_t deregisterCalls{0};

private:
    std::vector<IPluginCreatorInterface*> mCreators;
};

HarnessRegistry gRegistry;
} // namespace

// libnvinfer exports these; a plugin library loaded by dlopen alone finds them with dlsym.
extern "C" __attribute__((visibility("default"))) IPluginRegistry* getPluginRegistry() noexcept
{
    return &gRegistry;
}

extern "C" __attribute__((visibility("default"))) ILogger* getLogger() noexcept
{
    return &gLogger;
}

namespace
{

// ---- the TensorRT side: expression builder ------------------------------------
// Each expression carries the value it has for the concrete T being checked
// and whether TensorRT would treat it as a build-time constant. T is symbolic:
// a plugin that asks for its constant value gets INT64_MIN, as from TensorRT.
class HarnessDimExpr : public IDimensionExpr
{
    struct Impl : public apiv::VDimensionExpr
    {
        bool isConstant() const override
        {
            return constant;
        }
        int64_t getConstantValue() const override
        {
            return constant ? value : std::numeric_limits<int64_t>::min();
        }
        bool isSizeTensor() const override
        {
            return false;
        }
        int64_t value{0};
        bool constant{true};
    };

public:
    HarnessDimExpr(int64_t value, bool constant)
    {
        mOwn.value = value;
        mOwn.constant = constant;
        mImpl = &mOwn;
    }
    ~HarnessDimExpr() noexcept override = default;
    int64_t value() const
    {
        return mOwn.value;
    }

private:
    Impl mOwn;
};

class HarnessExprBuilder : public IExprBuilder
{
    struct Impl : public apiv::VExprBuilder
    {
        IDimensionExpr const* constant(int64_t value) override
        {
            return owner->make(value, true);
        }
        IDimensionExpr const* operation(
            DimensionOperation op, IDimensionExpr const& first, IDimensionExpr const& second) override
        {
            // Every expression a plugin receives or makes was made here.
            int64_t const a = static_cast<HarnessDimExpr const&>(first).value();
            int64_t const b = static_cast<HarnessDimExpr const&>(second).value();
            int64_t v = 0;
            switch (op)
            {
            case DimensionOperation::kSUM: v = a + b; break;
            case DimensionOperation::kPROD: v = a * b; break;
            case DimensionOperation::kMAX: v = std::max(a, b); break;
            case DimensionOperation::kMIN: v = std::min(a, b); break;
            case DimensionOperation::kSUB: v = a - b; break;
            case DimensionOperation::kEQUAL: v = a == b; break;
            case DimensionOperation::kLESS: v = a < b; break;
            case DimensionOperation::kFLOOR_DIV: v = b ? (a / b - ((a % b != 0) && ((a < 0) != (b < 0)))) : 0; break;
            case DimensionOperation::kCEIL_DIV: v = b ? (a + b - 1) / b : 0; break;
            }
            return owner->make(v, first.isConstant() && second.isConstant());
        }
        IDimensionExpr const* declareSizeTensor(int32_t, IDimensionExpr const&, IDimensionExpr const&) override
        {
            ++owner->sizeTensorRequests;
            return nullptr;
        }
        HarnessExprBuilder* owner{nullptr};
    };

public:
    HarnessExprBuilder()
    {
        mOwn.owner = this;
        mImpl = &mOwn;
    }
    ~HarnessExprBuilder() noexcept override = default;
    IDimensionExpr const* make(int64_t value, bool constant)
    {
        mExprs.push_back(std::make_unique<HarnessDimExpr>(value, constant));
        return mExprs.back().get();
    }
    int32_t sizeTensorRequests{0};

private:
    Impl mOwn;
    std::deque<std::unique_ptr<HarnessDimExpr>> mExprs;
};

class HarnessResourceContext : public IPluginResourceContext
{
public:
    IGpuAllocator* getGpuAllocator() const noexcept override
    {
        return nullptr;
    }
    IErrorRecorder* getErrorRecorder() const noexcept override
    {
        return nullptr;
    }
    ~HarnessResourceContext() noexcept override = default;
};

// ---- the ops as the harness expects them (shared/spec/mhc_ops.md) ------------
// Shapes are strings of dimension codes: T tokens, n streams, d hidden,
// M = (2+n)*n, K = n*d, or a digit for a constant.
struct TensorSpec
{
    char const* name;
    char const* shape;
    bool residualType; // else float32
};

struct FieldExpect
{
    char const* name;
    PluginFieldType type;
    enum Rule
    {
        kEPS,
        kPOSITIVE,
        kITERS
    } rule;
};

struct OpSpec
{
    char const* key;
    char const* pluginName;
    std::vector<TensorSpec> inputs;
    std::vector<TensorSpec> outputs;
    std::vector<FieldExpect> fields;
};

std::vector<FieldExpect> const kMIX_FIELDS = {{"rms_eps", PluginFieldType::kFLOAT32, FieldExpect::kEPS},
    {"pre_eps", PluginFieldType::kFLOAT32, FieldExpect::kEPS},
    {"sinkhorn_eps", PluginFieldType::kFLOAT32, FieldExpect::kEPS},
    {"post_mult", PluginFieldType::kFLOAT32, FieldExpect::kPOSITIVE},
    {"sinkhorn_iters", PluginFieldType::kINT32, FieldExpect::kITERS}};

std::vector<OpSpec> const kOPS = {
    {"pre", "MhcPre", {{"residual", "Tnd", true}, {"hc_fn", "MK", false}, {"hc_scale", "3", false}, {"hc_base", "M", false}},
        {{"layer_input", "Td", true}, {"post_mix", "Tn", false}, {"comb_mix", "Tnn", false}},
        {{"rms_eps", PluginFieldType::kFLOAT32, FieldExpect::kEPS},
            {"pre_eps", PluginFieldType::kFLOAT32, FieldExpect::kEPS},
            {"sinkhorn_eps", PluginFieldType::kFLOAT32, FieldExpect::kEPS},
            {"post_mult", PluginFieldType::kFLOAT32, FieldExpect::kPOSITIVE},
            {"sinkhorn_iters", PluginFieldType::kINT32, FieldExpect::kITERS}}},
    {"sinkhorn", "MhcSinkhorn", {{"logits", "Tnn", false}}, {{"comb", "Tnn", false}},
        {{"iters", PluginFieldType::kINT32, FieldExpect::kITERS}, {"eps", PluginFieldType::kFLOAT32, FieldExpect::kEPS}}},
    {"post", "MhcPost",
        {{"x", "Td", true}, {"residual", "Tnd", true}, {"post_mix", "Tn", false}, {"comb_mix", "Tnn", false}},
        {{"out", "Tnd", true}}, {}},
    {"head", "MhcHead", {{"residual", "Tnd", true}, {"hc_fn", "nK", false}, {"hc_scale", "1", false}, {"hc_base", "n", false}},
        {{"y", "Td", true}},
        {{"rms_eps", PluginFieldType::kFLOAT32, FieldExpect::kEPS}, {"eps", PluginFieldType::kFLOAT32, FieldExpect::kEPS}}},
    {"post_pre", "MhcPostPre",
        {{"x", "Td", true}, {"residual", "Tnd", true}, {"post_mix", "Tn", false}, {"comb_mix", "Tnn", false},
            {"hc_fn", "MK", false}, {"hc_scale", "3", false}, {"hc_base", "M", false}},
        {{"residual_out", "Tnd", true}, {"layer_input", "Td", true}, {"next_post_mix", "Tn", false},
            {"next_comb_mix", "Tnn", false}},
        {{"rms_eps", PluginFieldType::kFLOAT32, FieldExpect::kEPS},
            {"pre_eps", PluginFieldType::kFLOAT32, FieldExpect::kEPS},
            {"sinkhorn_eps", PluginFieldType::kFLOAT32, FieldExpect::kEPS},
            {"post_mult", PluginFieldType::kFLOAT32, FieldExpect::kPOSITIVE},
            {"sinkhorn_iters", PluginFieldType::kINT32, FieldExpect::kITERS}}},
    {"post_head", "MhcPostHead",
        {{"x", "Td", true}, {"residual", "Tnd", true}, {"post_mix", "Tn", false}, {"comb_mix", "Tnn", false},
            {"hc_fn", "nK", false}, {"hc_scale", "1", false}, {"hc_base", "n", false}},
        {{"y", "Td", true}},
        {{"rms_eps", PluginFieldType::kFLOAT32, FieldExpect::kEPS}, {"eps", PluginFieldType::kFLOAT32, FieldExpect::kEPS}}},
    // DeepSeek-V4.1 (spec "DeepSeek-V4.1"): MhcPre's fields on the mixes ops, none on the collapses.
    {"mix", "MhcMix", {{"residual", "Tnd", true}, {"hc_fn", "MK", false}, {"hc_scale", "3", false}, {"hc_base", "M", false}},
        {{"pre_mix", "Tn", false}, {"post_mix", "Tn", false}, {"comb_mix", "Tnn", false}}, kMIX_FIELDS},
    {"collapse", "MhcCollapse", {{"residual", "Tnd", true}, {"pre_mix", "Tn", false}}, {{"layer_input", "Td", true}}, {}},
    {"post_mix", "MhcPostMix",
        {{"x", "Td", true}, {"residual", "Tnd", true}, {"pre_mix", "Tn", false}, {"post_mix", "Tn", false},
            {"comb_mix", "Tnn", false}, {"hc_fn", "MK", false}, {"hc_scale", "3", false}, {"hc_base", "M", false}},
        {{"residual_out", "Tnd", true}, {"layer_input", "Td", true}, {"next_pre_mix", "Tn", false},
            {"next_post_mix", "Tn", false}, {"next_comb_mix", "Tnn", false}},
        kMIX_FIELDS},
    {"post_collapse", "MhcPostCollapse",
        {{"x", "Td", true}, {"residual", "Tnd", true}, {"pre_mix", "Tn", false}, {"post_mix", "Tn", false},
            {"comb_mix", "Tnn", false}},
        {{"y", "Td", true}}, {}},
};

int64_t dimValue(char code, int64_t t, int64_t n, int64_t d)
{
    switch (code)
    {
    case 'T': return t;
    case 'n': return n;
    case 'd': return d;
    case 'M': return (2 + n) * n;
    case 'K': return n * d;
    default: return code - '0';
    }
}

Dims dimsOf(TensorSpec const& s, int64_t t, int64_t n, int64_t d)
{
    Dims dims{};
    dims.nbDims = static_cast<int32_t>(std::strlen(s.shape));
    for (int32_t i = 0; i < dims.nbDims; ++i)
    {
        dims.d[i] = dimValue(s.shape[i], t, n, d);
    }
    return dims;
}

int64_t volume(Dims const& d)
{
    int64_t v = 1;
    for (int32_t i = 0; i < d.nbDims; ++i)
    {
        v *= d.d[i];
    }
    return v;
}

size_t elemSize(DataType t)
{
    return t == DataType::kFLOAT ? 4 : 2;
}

char const* typeName(DataType t)
{
    switch (t)
    {
    case DataType::kFLOAT: return "float32";
    case DataType::kHALF: return "float16";
    case DataType::kBF16: return "bfloat16";
    case DataType::kINT8: return "int8";
    case DataType::kINT32: return "int32";
    default: return "other";
    }
}

bool parseDtype(std::string const& s, DataType* out)
{
    if (s == "float32" || s == "fp32")
    {
        *out = DataType::kFLOAT;
    }
    else if (s == "float16" || s == "fp16")
    {
        *out = DataType::kHALF;
    }
    else if (s == "bfloat16" || s == "bf16")
    {
        *out = DataType::kBF16;
    }
    else
    {
        return false;
    }
    return true;
}

// ---- the plugin library --------------------------------------------------------
using GetCreatorsFn = IPluginCreatorInterface* const* (*) (int32_t&);
using SetLoggerFinderFn = void (*)(ILoggerFinder*);

struct Library
{
    void* handle{nullptr};
    std::vector<IPluginCreatorV3One*> creators;
};

bool loadLibrary(char const* path, Library* lib)
{
    // RTLD_LOCAL as TensorRT's loader does: the library must not rely on
    // symbols leaking from other libraries.
    lib->handle = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!lib->handle)
    {
        std::printf("FAIL dlopen %s: %s\n", path, dlerror());
        return false;
    }
    auto setLoggerFinder = reinterpret_cast<SetLoggerFinderFn>(dlsym(lib->handle, "setLoggerFinder"));
    auto getCreators = reinterpret_cast<GetCreatorsFn>(dlsym(lib->handle, "getCreators"));
    check(setLoggerFinder != nullptr, "library exports setLoggerFinder");
    check(getCreators != nullptr, "library exports getCreators");
    if (!setLoggerFinder || !getCreators)
    {
        return false;
    }
    setLoggerFinder(&gLoggerFinder);
    int32_t nb = -1;
    IPluginCreatorInterface* const* list = getCreators(nb);
    check(list != nullptr && nb > 0, "getCreators returns " + std::to_string(nb) + " creators");
    for (int32_t i = 0; list && i < nb; ++i)
    {
        InterfaceInfo const info = list[i]->getInterfaceInfo();
        bool const isV3One = std::strcmp(info.kind, "PLUGIN CREATOR_V3ONE") == 0;
        check(isV3One && info.major == 1, std::string("creator ") + std::to_string(i) + " interface is " + info.kind);
        if (isV3One)
        {
            lib->creators.push_back(static_cast<IPluginCreatorV3One*>(list[i]));
        }
    }
    return gFailures == 0;
}

IPluginCreatorV3One* findCreator(Library const& lib, char const* name)
{
    for (auto* c : lib.creators)
    {
        if (std::strcmp(c->getPluginName(), name) == 0 && std::strcmp(c->getPluginVersion(), "1") == 0
            && std::strcmp(c->getPluginNamespace(), "mhc") == 0)
        {
            return c;
        }
    }
    return nullptr;
}

// Owns a PluginFieldCollection the way a parser or TensorRT's deserializer does.
class FieldSet
{
public:
    FieldSet() = default;
    FieldSet(FieldSet const&) = delete;
    void add(std::string const& name, PluginFieldType type, void const* data, int32_t length, size_t bytes)
    {
        mNames.push_back(std::make_unique<std::string>(name));
        mData.push_back(std::make_unique<std::vector<uint8_t>>(
            static_cast<uint8_t const*>(data), static_cast<uint8_t const*>(data) + bytes));
        mFields.emplace_back(mNames.back()->c_str(), mData.back()->data(), type, length);
    }
    void addFloat(std::string const& name, float v)
    {
        add(name, PluginFieldType::kFLOAT32, &v, 1, sizeof(v));
    }
    void addInt(std::string const& name, int32_t v)
    {
        add(name, PluginFieldType::kINT32, &v, 1, sizeof(v));
    }
    void addString(std::string const& name, std::string const& v)
    {
        add(name, PluginFieldType::kCHAR, v.c_str(), static_cast<int32_t>(v.size()), v.size());
    }
    // Deep copy: what TensorRT writes into the engine and reads back.
    void copyFrom(PluginFieldCollection const* fc)
    {
        for (int32_t i = 0; fc && i < fc->nbFields; ++i)
        {
            PluginField const& f = fc->fields[i];
            size_t unit = 1;
            if (f.type == PluginFieldType::kFLOAT32 || f.type == PluginFieldType::kINT32)
            {
                unit = 4;
            }
            add(f.name, f.type, f.data, f.length, unit * static_cast<size_t>(f.length));
        }
    }
    PluginFieldCollection const* get()
    {
        mFc.nbFields = static_cast<int32_t>(mFields.size());
        mFc.fields = mFields.data();
        return &mFc;
    }
    PluginField const* find(std::string const& name) const
    {
        for (auto const& f : mFields)
        {
            if (name == f.name)
            {
                return &f;
            }
        }
        return nullptr;
    }

private:
    std::vector<std::unique_ptr<std::string>> mNames;
    std::vector<std::unique_ptr<std::vector<uint8_t>>> mData;
    std::vector<PluginField> mFields;
    PluginFieldCollection mFc{};
};

template <typename T>
T* capability(IPluginV3* p, PluginCapabilityType type, char const* kind)
{
    IPluginCapability* c = p ? p->getCapabilityInterface(type) : nullptr;
    bool const ok = c != nullptr && std::strcmp(c->getInterfaceInfo().kind, kind) == 0;
    check(ok, std::string("capability ") + kind);
    return ok ? static_cast<T*>(c) : nullptr;
}

// ---- mode: logger ------------------------------------------------------------------
// Only the library's own entry points and a creator's getPluginName/createPlugin
// are called, so the check also runs on a library of the other TensorRT major.
int modeLogger(Library const& lib)
{
    IPluginCreatorV3One* c = findCreator(lib, "MhcSinkhorn");
    check(c != nullptr, "creator MhcSinkhorn found");
    if (!c)
    {
        return 1;
    }
    int32_t const badIters = 0;
    PluginField field("iters", &badIters, PluginFieldType::kINT32, 1);
    PluginFieldCollection fc{1, &field};
    gLogger.takeMessages();
    IPluginV3* p = c->createPlugin("harness", &fc, TensorRTPhase::kBUILD);
    std::string const logged = gLogger.takeMessages();
    std::printf("LOGGER %s\n", logged.find("iters") != std::string::npos ? "received" : "silent");
    check(p == nullptr, "iters=0 rejected");
    delete p;
    return 0;
}

// ---- mode: registry -------------------------------------------------------------------
// Loads the library the ways TensorRT and its users do, in the order given:
// "dlopen" (polygraphy --plugins, ctypes.CDLL: nothing but dlopen) and
// "loadLibrary" (IPluginRegistry::loadLibrary, trtexec --dynamicPlugins).
// Then lists what this harness's registry holds; pytest checks it.
int modeRegistry(char const* path, std::string const& steps)
{
    std::stringstream ss(steps);
    std::string step;
    std::vector<void*> handles;
    while (std::getline(ss, step, ','))
    {
        if (step == "dlopen")
        {
            void* h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
            check(h != nullptr, std::string("dlopen ") + path + (h ? "" : std::string(": ") + dlerror()));
            handles.push_back(h);
        }
        else if (step == "loadLibrary")
        {
            check(gRegistry.loadLibrary(path) != nullptr, "IPluginRegistry::loadLibrary returns a handle");
        }
        else
        {
            std::printf("usage: registry --load dlopen|loadLibrary[,...]\n");
            return 2;
        }
    }
    int32_t nb = 0;
    IPluginCreatorInterface* const* all = gRegistry.getAllCreators(&nb);
    for (int32_t i = 0; i < nb; ++i)
    {
        std::string fields;
        if (HarnessRegistry::keyOf(*all[i]) != "?")
        {
            PluginFieldCollection const* fc = static_cast<IPluginCreatorV3One*>(all[i])->getFieldNames();
            for (int32_t k = 0; fc && k < fc->nbFields; ++k)
            {
                fields += (k ? "," : "") + std::string(fc->fields[k].name);
            }
        }
        std::printf("REGISTERED %s fields=%s\n", HarnessRegistry::keyOf(*all[i]).c_str(), fields.c_str());
    }
    std::printf("REGISTRY %d creators, %d registerCreator calls, %d deregisterCreator calls\n", nb,
        gRegistry.registerCalls, gRegistry.deregisterCalls);
    // A bad field through the registered creator: its message must reach this
    // harness's logger (given by loadLibrary, or found by getLogger after a dlopen).
    if (auto* c = static_cast<IPluginCreatorV3One*>(gRegistry.getCreator("MhcSinkhorn", "1", "mhc")))
    {
        int32_t const badIters = 0;
        PluginField field("iters", &badIters, PluginFieldType::kINT32, 1);
        PluginFieldCollection fc{1, &field};
        gLogger.takeMessages();
        IPluginV3* p = c->createPlugin("harness", &fc, TensorRTPhase::kBUILD);
        std::printf("LOGGER %s\n", gLogger.takeMessages().find("iters") != std::string::npos ? "received" : "silent");
        delete p;
    }
    return gFailures ? 1 : 0;
}

// ---- mode: list --------------------------------------------------------------------
int modeList(Library const& lib)
{
    for (auto* c : lib.creators)
    {
        std::printf("creator %s %s %s\n", c->getPluginName(), c->getPluginVersion(), c->getPluginNamespace());
        PluginFieldCollection const* fc = c->getFieldNames();
        for (int32_t i = 0; fc && i < fc->nbFields; ++i)
        {
            PluginFieldType const t = fc->fields[i].type;
            std::printf("field %s %s %s\n", c->getPluginName(), fc->fields[i].name,
                t == PluginFieldType::kFLOAT32 ? "float" : t == PluginFieldType::kINT32 ? "int" : "other");
        }
    }
    return 0;
}

// ---- mode: fields ----------------------------------------------------------------------
bool expectRejected(IPluginCreatorV3One* c, FieldSet& fs, TensorRTPhase phase, std::string const& mustName,
    std::string const& what)
{
    gLogger.takeMessages();
    IPluginV3* p = c->createPlugin("harness", fs.get(), phase);
    std::string const logged = gLogger.takeMessages();
    bool const ok = p == nullptr && logged.find(mustName) != std::string::npos;
    check(ok, std::string(c->getPluginName()) + ": " + what + " rejected naming '" + mustName + "'"
            + (phase == TensorRTPhase::kRUNTIME ? " (runtime phase)" : ""));
    delete p;
    return ok;
}

int modeFields(Library const& lib)
{
    float const nan = std::numeric_limits<float>::quiet_NaN();
    float const inf = std::numeric_limits<float>::infinity();
    for (OpSpec const& op : kOPS)
    {
        IPluginCreatorV3One* c = findCreator(lib, op.pluginName);
        check(c != nullptr, std::string("creator ") + op.pluginName + " v1 in namespace mhc");
        if (!c)
        {
            continue;
        }
        // Field list: exactly the spec's attributes with their types.
        PluginFieldCollection const* names = c->getFieldNames();
        bool same = names && names->nbFields == static_cast<int32_t>(op.fields.size());
        for (size_t i = 0; same && i < op.fields.size(); ++i)
        {
            same = std::strcmp(names->fields[i].name, op.fields[i].name) == 0 && names->fields[i].type == op.fields[i].type;
        }
        check(same, std::string(op.pluginName) + ": getFieldNames lists exactly the spec's attributes");

        for (TensorRTPhase phase : {TensorRTPhase::kBUILD, TensorRTPhase::kRUNTIME})
        {
            // No fields: the defaults (the ONNX parser omits attributes the node lacks).
            FieldSet none;
            IPluginV3* p = c->createPlugin("harness", none.get(), phase);
            check(p != nullptr, std::string(op.pluginName) + ": no fields -> defaults");
            delete p;

            FieldSet unknown;
            unknown.addFloat("bogus_field", 1.F);
            expectRejected(c, unknown, phase, "bogus_field", "unknown field");

            for (FieldExpect const& f : op.fields)
            {
                std::vector<std::pair<std::string, FieldSet*>> bad;
                std::vector<std::unique_ptr<FieldSet>> keep;
                auto mk = [&](std::string const& what) {
                    keep.push_back(std::make_unique<FieldSet>());
                    bad.emplace_back(what, keep.back().get());
                    return keep.back().get();
                };
                if (f.type == PluginFieldType::kFLOAT32)
                {
                    mk("NaN")->addFloat(f.name, nan);
                    mk("+inf")->addFloat(f.name, inf);
                    mk("-inf")->addFloat(f.name, -inf);
                    mk("-1")->addFloat(f.name, -1.F);
                    if (f.rule == FieldExpect::kPOSITIVE)
                    {
                        mk("0")->addFloat(f.name, 0.F);
                    }
                    mk("kINT32 type")->addInt(f.name, 1);
                    float two[2] = {1.F, 2.F};
                    mk("length 2")->add(f.name, PluginFieldType::kFLOAT32, two, 2, sizeof(two));
                    double dbl = 1e-6;
                    mk("kFLOAT64 type")->add(f.name, PluginFieldType::kFLOAT64, &dbl, 1, sizeof(dbl));
                }
                else
                {
                    mk("0")->addInt(f.name, 0);
                    mk("-5")->addInt(f.name, -5);
                    mk("kFLOAT32 type")->addFloat(f.name, 20.F);
                    int64_t i64 = 20;
                    mk("kINT64 type")->add(f.name, PluginFieldType::kINT64, &i64, 1, sizeof(i64));
                }
                for (auto& b : bad)
                {
                    expectRejected(c, *b.second, phase, f.name, std::string(f.name) + " = " + b.first);
                }
            }

            // The parser passes only the creator's listed fields, but other
            // front ends may forward the node's plugin_* strings: accept them
            // when they agree, refuse them when they do not.
            FieldSet strings;
            strings.addString("plugin_namespace", "mhc");
            strings.addString("plugin_version", "1");
            p = c->createPlugin("harness", strings.get(), phase);
            check(p != nullptr, std::string(op.pluginName) + ": plugin_namespace=mhc, plugin_version=1 accepted");
            delete p;
            FieldSet wrongNs;
            wrongNs.addString("plugin_namespace", "other");
            expectRejected(c, wrongNs, phase, "plugin_namespace", "plugin_namespace=other");
        }

        // Good non-default values survive getFieldsToSerialize -> runtime createPlugin.
        FieldSet good;
        std::map<std::string, double> want;
        for (FieldExpect const& f : op.fields)
        {
            if (f.type == PluginFieldType::kFLOAT32)
            {
                float const v = f.rule == FieldExpect::kPOSITIVE ? 1.75F : (f.name[0] == 'r' ? 2.5e-5F : 3e-4F);
                good.addFloat(f.name, v);
                want[f.name] = v;
            }
            else
            {
                good.addInt(f.name, 7);
                want[f.name] = 7;
            }
        }
        IPluginV3* built = c->createPlugin("harness", good.get(), TensorRTPhase::kBUILD);
        check(built != nullptr, std::string(op.pluginName) + ": non-default good values accepted");
        auto* rt = capability<IPluginV3OneRuntime>(built, PluginCapabilityType::kRUNTIME, "PLUGIN_V3ONE_RUNTIME");
        if (rt)
        {
            FieldSet ser;
            ser.copyFrom(rt->getFieldsToSerialize());
            bool match = ser.get()->nbFields == static_cast<int32_t>(op.fields.size());
            for (auto const& kv : want)
            {
                PluginField const* f = ser.find(kv.first);
                if (!f || f->length != 1)
                {
                    match = false;
                    continue;
                }
                double got = f->type == PluginFieldType::kFLOAT32 ? *static_cast<float const*>(f->data)
                                                                  : *static_cast<int32_t const*>(f->data);
                match = match && got == kv.second;
            }
            check(match, std::string(op.pluginName) + ": getFieldsToSerialize returns the values given");
            delete built;
            IPluginV3* runtime = c->createPlugin("harness", ser.get(), TensorRTPhase::kRUNTIME);
            check(runtime != nullptr, std::string(op.pluginName) + ": runtime createPlugin from serialized fields");
            auto* rt2 = capability<IPluginV3OneRuntime>(runtime, PluginCapabilityType::kRUNTIME, "PLUGIN_V3ONE_RUNTIME");
            if (rt2)
            {
                FieldSet ser2;
                ser2.copyFrom(rt2->getFieldsToSerialize());
                bool same2 = ser2.get()->nbFields == ser.get()->nbFields;
                for (int32_t i = 0; same2 && i < ser.get()->nbFields; ++i)
                {
                    PluginField const& a = ser.get()->fields[i];
                    PluginField const* b = ser2.find(a.name);
                    same2 = b && b->type == a.type && b->length == a.length && std::memcmp(a.data, b->data, 4) == 0;
                }
                check(same2, std::string(op.pluginName) + ": runtime plugin re-serializes identically");
            }
            delete runtime;
        }
        else
        {
            delete built;
        }
    }
    return gFailures ? 1 : 0;
}

// ---- mode: run ---------------------------------------------------------------------
struct RunArgs
{
    std::string op;
    DataType dtype{DataType::kFLOAT};
    int64_t n{4};
    int64_t d{64};
    std::vector<int64_t> ts;
    std::string dir;
    std::vector<std::pair<std::string, std::string>> attrs;
    bool stringFields{false};
    bool gpu{true};
};

#define CUDA_CHECK(call)                                                                                               \
    do                                                                                                                 \
    {                                                                                                                  \
        cudaError_t const e_ = (call);                                                                                 \
        if (e_ != cudaSuccess)                                                                                         \
        {                                                                                                              \
            check(false, std::string(#call) + ": " + cudaGetErrorString(e_));                                          \
            return 1;                                                                                                  \
        }                                                                                                              \
    } while (0)

DataType typeOf(TensorSpec const& s, DataType residual)
{
    return s.residualType ? residual : DataType::kFLOAT;
}

int modeRun(Library const& lib, RunArgs const& a)
{
    OpSpec const* op = nullptr;
    for (auto const& o : kOPS)
    {
        if (a.op == o.key)
        {
            op = &o;
        }
    }
    if (!op || a.ts.empty())
    {
        std::printf("usage: run --op pre|sinkhorn|post|head --T t1,t2 ...\n");
        return 2;
    }
    std::string const tag = std::string(op->pluginName) + " " + typeName(a.dtype) + " n=" + std::to_string(a.n)
        + " d=" + std::to_string(a.d);
    int32_t const nbIn = static_cast<int32_t>(op->inputs.size());
    int32_t const nbOut = static_cast<int32_t>(op->outputs.size());
    int64_t const maxT = *std::max_element(a.ts.begin(), a.ts.end());
    int64_t const optT = (maxT + 1) / 2;  // the profile's kOPT, apart from kMAX

    // 1. creator and its fields; attributes arrive as the parser would pass them.
    IPluginCreatorV3One* creator = findCreator(lib, op->pluginName);
    check(creator != nullptr, tag + ": creator found by name/version/namespace");
    if (!creator)
    {
        return 1;
    }
    PluginFieldCollection const* names = creator->getFieldNames();
    FieldSet attrs;
    // TensorRT's ONNX parser types each field from the ONNX attribute's own type
    // (INT -> kINT32, FLOAT -> kFLOAT32), never from getFieldNames: the caller
    // says the type (--attr name:int=7); without one, the spec's kind is used.
    std::vector<std::pair<std::string, std::string>> plainAttrs;
    for (auto const& kv : a.attrs)
    {
        std::string name = kv.first;
        std::string kind;
        size_t const colon = name.find(':');
        if (colon != std::string::npos)
        {
            kind = name.substr(colon + 1);
            name = name.substr(0, colon);
        }
        if (kind.empty())
        {
            for (FieldExpect const& f : op->fields)
            {
                if (name == f.name)
                {
                    kind = f.type == PluginFieldType::kINT32 ? "int" : "float";
                }
            }
        }
        if (kind == "int")
        {
            attrs.addInt(name, static_cast<int32_t>(std::stol(kv.second)));
        }
        else if (kind == "float")
        {
            attrs.addFloat(name, std::stof(kv.second));
        }
        else
        {
            std::printf("usage: --attr %s needs a type (name:int=V or name:float=V)\n", name.c_str());
            return 2;
        }
        plainAttrs.emplace_back(name, kv.second);
    }
    if (a.stringFields)
    {
        attrs.addString("plugin_namespace", "mhc");
        attrs.addString("plugin_version", "1");
    }

    // 2. build phase.
    IPluginV3* built = creator->createPlugin("harness_layer", attrs.get(), TensorRTPhase::kBUILD);
    check(built != nullptr, tag + ": createPlugin (build phase)");
    if (!built)
    {
        return 1;
    }
    auto* core = capability<IPluginV3OneCore>(built, PluginCapabilityType::kCORE, "PLUGIN_V3ONE_CORE");
    auto* build = capability<IPluginV3OneBuild>(built, PluginCapabilityType::kBUILD, "PLUGIN_V3ONE_BUILD");
    if (!core || !build)
    {
        return 1;
    }
    check(std::strcmp(core->getPluginName(), op->pluginName) == 0 && std::strcmp(core->getPluginVersion(), "1") == 0
            && std::strcmp(core->getPluginNamespace(), "mhc") == 0,
        tag + ": core identity");
    check(build->getNbOutputs() == nbOut, tag + ": getNbOutputs == " + std::to_string(nbOut));

    std::vector<DataType> inTypes, outTypes(nbOut, DataType::kINT8);
    for (auto const& s : op->inputs)
    {
        inTypes.push_back(typeOf(s, a.dtype));
    }
    int32_t rc = build->getOutputDataTypes(outTypes.data(), nbOut, inTypes.data(), nbIn);
    bool typesOk = rc == 0;
    for (int32_t i = 0; i < nbOut; ++i)
    {
        typesOk = typesOk && outTypes[i] == typeOf(op->outputs[i], a.dtype);
    }
    check(typesOk, tag + ": getOutputDataTypes");
    if (op->inputs[0].residualType)
    {
        std::vector<DataType> badTypes = inTypes;
        badTypes[0] = DataType::kINT8;
        gLogger.takeMessages();
        check(build->getOutputDataTypes(outTypes.data(), nbOut, badTypes.data(), nbIn) != 0,
            tag + ": getOutputDataTypes refuses an int8 residual");
        gLogger.takeMessages();
    }

    // 3. output shapes through the expression builder, for each concrete T.
    for (int64_t t : a.ts)
    {
        HarnessExprBuilder eb;
        std::vector<DimsExprs> in(nbIn), out(nbOut);
        for (int32_t i = 0; i < nbIn; ++i)
        {
            char const* s = op->inputs[i].shape;
            in[i].nbDims = static_cast<int32_t>(std::strlen(s));
            for (int32_t k = 0; k < in[i].nbDims; ++k)
            {
                in[i].d[k] = eb.make(dimValue(s[k], t, a.n, a.d), s[k] != 'T');
            }
        }
        rc = build->getOutputShapes(in.data(), nbIn, nullptr, 0, out.data(), nbOut, eb);
        bool ok = rc == 0 && eb.sizeTensorRequests == 0;
        std::string got;
        for (int32_t i = 0; ok && i < nbOut; ++i)
        {
            char const* s = op->outputs[i].shape;
            ok = out[i].nbDims == static_cast<int32_t>(std::strlen(s));
            for (int32_t k = 0; ok && k < out[i].nbDims; ++k)
            {
                auto const* e = static_cast<HarnessDimExpr const*>(out[i].d[k]);
                ok = e != nullptr && e->value() == dimValue(s[k], t, a.n, a.d) && e->isConstant() == (s[k] != 'T');
            }
        }
        check(ok, tag + ": getOutputShapes at T=" + std::to_string(t) + " (T symbolic, n and d constant)");
    }
    if (std::strchr(op->inputs.size() > 1 ? op->inputs[1].shape : "", 'K'))
    {
        // hc_fn whose K does not match n*d must be refused at build time.
        HarnessExprBuilder eb;
        std::vector<DimsExprs> in(nbIn), out(nbOut);
        for (int32_t i = 0; i < nbIn; ++i)
        {
            char const* s = op->inputs[i].shape;
            in[i].nbDims = static_cast<int32_t>(std::strlen(s));
            for (int32_t k = 0; k < in[i].nbDims; ++k)
            {
                int64_t v = dimValue(s[k], 5, a.n, a.d) + (s[k] == 'K' ? 8 : 0);
                in[i].d[k] = eb.make(v, s[k] != 'T');
            }
        }
        gLogger.takeMessages();
        check(build->getOutputShapes(in.data(), nbIn, nullptr, 0, out.data(), nbOut, eb) != 0,
            tag + ": getOutputShapes refuses hc_fn with K != n*d");
        gLogger.takeMessages();
    }

    // 4. format negotiation: TensorRT asks position by position with the
    // earlier positions already fixed; only linear, and only the right types.
    int32_t const nbIO = nbIn + nbOut;
    std::vector<DynamicPluginTensorDesc> io(nbIO);
    std::vector<DataType> wantTypes;
    for (int32_t i = 0; i < nbIO; ++i)
    {
        TensorSpec const& s = i < nbIn ? op->inputs[i] : op->outputs[i - nbIn];
        wantTypes.push_back(typeOf(s, a.dtype));
        // Network time: TensorRT may leave any dim a wildcard in desc.dims (the
        // full model's residual comes from an Expand); min/max are concrete.
        io[i].desc.dims.nbDims = static_cast<int32_t>(std::strlen(s.shape));
        std::fill_n(io[i].desc.dims.d, io[i].desc.dims.nbDims, int64_t{-1});
        io[i].desc.format = TensorFormat::kLINEAR;
        io[i].desc.scale = -1.F;
        io[i].min = dimsOf(s, 1, a.n, a.d);
        io[i].opt = dimsOf(s, optT, a.n, a.d);
        io[i].max = dimsOf(s, maxT, a.n, a.d);
    }
    int32_t const firstResidual = op->inputs[0].residualType ? 0 : -1;
    bool formatsOk = true;
    for (int32_t pos = 0; pos < nbIO; ++pos)
    {
        for (DataType cand : {DataType::kFLOAT, DataType::kHALF, DataType::kBF16, DataType::kINT8, DataType::kINT32})
        {
            for (TensorFormat fmt : {TensorFormat::kLINEAR, TensorFormat::kHWC8, TensorFormat::kCHW32})
            {
                io[pos].desc.type = cand;
                io[pos].desc.format = fmt;
                bool const want = fmt == TensorFormat::kLINEAR
                    && (cand == wantTypes[pos]
                        || (pos == firstResidual
                            && (cand == DataType::kFLOAT || cand == DataType::kHALF || cand == DataType::kBF16)));
                bool const got = build->supportsFormatCombination(pos, io.data(), nbIn, nbOut);
                if (got != want)
                {
                    formatsOk = false;
                    std::printf("  supportsFormatCombination(pos=%d, %s, format %d) = %d, expected %d\n", pos,
                        typeName(cand), static_cast<int>(fmt), got, want);
                }
            }
        }
        io[pos].desc.type = wantTypes[pos];
        io[pos].desc.format = TensorFormat::kLINEAR;
    }
    check(formatsOk, tag + ": supportsFormatCombination accepts exactly linear " + typeName(a.dtype) + "/float32");

    // 5. configurePlugin, workspace, serialization.
    rc = build->configurePlugin(io.data(), nbIn, io.data() + nbIn, nbOut);
    check(rc == 0, tag + ": configurePlugin (T in [1, " + std::to_string(maxT) + "], dims -1 in desc.dims)");
    {
        // n and d are fixed per engine: a profile in which they vary is refused.
        std::vector<DynamicPluginTensorDesc> varying(io);
        for (int32_t i = 0; i < nbIn; ++i)
        {
            Dims& mx = varying[i].max;
            mx.d[mx.nbDims - 1] += mx.nbDims >= 2 ? 8 : 0;
        }
        gLogger.takeMessages();
        check(build->configurePlugin(varying.data(), nbIn, varying.data() + nbIn, nbOut) != 0,
            tag + ": configurePlugin refuses a profile in which n or d varies");
        gLogger.takeMessages();
    }
    size_t const wsBytes = build->getWorkspaceSize(io.data(), nbIn, io.data() + nbIn, nbOut);
    std::printf("  workspace at max T=%lld: %zu bytes\n", static_cast<long long>(maxT), wsBytes);

    // TensorRT times tactics by enqueueing through clones of the build plugin:
    // keep one, configured like the original, for the GPU checks below.
    IPluginV3* buildClone = built->clone();
    check(buildClone != nullptr && buildClone != built, tag + ": clone");
    if (!buildClone)
    {
        return 1;
    }
    auto* cloneBuild = capability<IPluginV3OneBuild>(buildClone, PluginCapabilityType::kBUILD, "PLUGIN_V3ONE_BUILD");
    auto* cloneRt = capability<IPluginV3OneRuntime>(buildClone, PluginCapabilityType::kRUNTIME, "PLUGIN_V3ONE_RUNTIME");
    if (!cloneBuild || !cloneRt)
    {
        return 1;
    }
    check(cloneBuild->configurePlugin(io.data(), nbIn, io.data() + nbIn, nbOut) == 0, tag + ": configurePlugin on the clone");

    auto* buildRt = capability<IPluginV3OneRuntime>(built, PluginCapabilityType::kRUNTIME, "PLUGIN_V3ONE_RUNTIME");
    if (!buildRt)
    {
        return 1;
    }
    FieldSet serialized;
    serialized.copyFrom(buildRt->getFieldsToSerialize());
    bool serOk = serialized.get()->nbFields == (names ? names->nbFields : 0);
    for (auto const& kv : plainAttrs)
    {
        PluginField const* f = serialized.find(kv.first);
        if (!f)
        {
            serOk = false;
            continue;
        }
        double const got = f->type == PluginFieldType::kFLOAT32 ? *static_cast<float const*>(f->data)
                                                                : *static_cast<int32_t const*>(f->data);
        double const want = f->type == PluginFieldType::kFLOAT32 ? static_cast<double>(std::stof(kv.second))
                                                                 : static_cast<double>(std::stol(kv.second));
        serOk = serOk && got == want;
    }
    check(serOk, tag + ": getFieldsToSerialize carries every field with the given values");
    // The engine keeps only the serialized fields: the build plugin goes away.
    delete built;

    // 6. runtime phase: deserialize, attach to a context, shapes, enqueue.
    IPluginV3* engPlugin = creator->createPlugin("harness_layer", serialized.get(), TensorRTPhase::kRUNTIME);
    check(engPlugin != nullptr, tag + ": createPlugin (runtime phase) from serialized fields");
    if (!engPlugin)
    {
        return 1;
    }
    auto* engRt = capability<IPluginV3OneRuntime>(engPlugin, PluginCapabilityType::kRUNTIME, "PLUGIN_V3ONE_RUNTIME");
    HarnessResourceContext resCtx;
    IPluginV3* ctxPlugin = engRt ? engRt->attachToContext(&resCtx) : nullptr;
    check(ctxPlugin != nullptr && ctxPlugin != engPlugin, tag + ": attachToContext returns a new plugin");
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
    auto descsAt = [&](int64_t t, std::vector<PluginTensorDesc>& in, std::vector<PluginTensorDesc>& out) {
        in.assign(nbIn, PluginTensorDesc{});
        out.assign(nbOut, PluginTensorDesc{});
        for (int32_t i = 0; i < nbIO; ++i)
        {
            PluginTensorDesc& dsc = i < nbIn ? in[i] : out[i - nbIn];
            dsc = io[i].desc;
            dsc.dims = dimsOf(i < nbIn ? op->inputs[i] : op->outputs[i - nbIn], t, a.n, a.d);
        }
    };
    {
        // TensorRT calls onShapeChange at the profile's kOPT shape while timing,
        // on the build plugin's clones as on the engine's.
        std::vector<PluginTensorDesc> in, out;
        descsAt(optT, in, out);
        check(rt->onShapeChange(in.data(), nbIn, out.data(), nbOut) == 0,
            tag + ": onShapeChange at kOPT T=" + std::to_string(optT));
        check(cloneRt->onShapeChange(in.data(), nbIn, out.data(), nbOut) == 0,
            tag + ": onShapeChange at kOPT T=" + std::to_string(optT) + " on the build clone");
    }
    if (!a.gpu)
    {
        for (int64_t t : a.ts)
        {
            std::vector<PluginTensorDesc> in, out;
            descsAt(t, in, out);
            check(rt->onShapeChange(in.data(), nbIn, out.data(), nbOut) == 0,
                tag + ": onShapeChange T=" + std::to_string(t));
        }
        delete buildClone;
        delete ctxPlugin;
        delete engPlugin;
        return gFailures ? 1 : 0;
    }

    // A second execution context of the same engine: its own plugin, its own
    // stream and workspace, run on another thread at the same time.
    HarnessResourceContext resCtx2;
    IPluginV3* ctxPlugin2 = engRt->attachToContext(&resCtx2);
    auto* rt2 = ctxPlugin2
        ? capability<IPluginV3OneRuntime>(ctxPlugin2, PluginCapabilityType::kRUNTIME, "PLUGIN_V3ONE_RUNTIME")
        : nullptr;
    check(rt2 != nullptr, tag + ": a second attachToContext (second execution context)");
    if (!rt2)
    {
        return 1;
    }
    cudaStream_t stream, stream2;
    CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
    CUDA_CHECK(cudaStreamCreateWithFlags(&stream2, cudaStreamNonBlocking));
    void* workspace = nullptr;
    void* workspace2 = nullptr;
    if (wsBytes)
    {
        CUDA_CHECK(cudaMalloc(&workspace, wsBytes));
        CUDA_CHECK(cudaMalloc(&workspace2, wsBytes));
        // Garbage, not zeros: the kernels must not rely on a cleared workspace.
        CUDA_CHECK(cudaMemset(workspace, 0xA5, wsBytes));
        CUDA_CHECK(cudaMemset(workspace2, 0x5A, wsBytes));
    }
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
    for (int64_t t : a.ts)
    {
        std::string const tt = tag + " T=" + std::to_string(t);
        std::vector<PluginTensorDesc> in, out;
        descsAt(t, in, out);
        std::vector<void*> dIn(nbIn, nullptr);
        std::vector<std::vector<void*>> dOut(kWAYS, std::vector<void*>(nbOut, nullptr));
        std::vector<size_t> outBytes(nbOut);
        for (int32_t i = 0; i < nbIn; ++i)
        {
            size_t const bytes = static_cast<size_t>(volume(in[i].dims)) * elemSize(in[i].type);
            std::string const path = a.dir + "/T" + std::to_string(t) + "." + op->inputs[i].name + ".bin";
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
        for (int32_t o = 0; o < nbOut; ++o)
        {
            outBytes[o] = static_cast<size_t>(volume(out[o].dims)) * elemSize(out[o].type);
            for (int w = 0; w < kWAYS; ++w)
            {
                CUDA_CHECK(cudaMalloc(&dOut[w][o], std::max<size_t>(outBytes[o], 1)));
                // NaN in every dtype: all-ones bytes; an unwritten element stays so.
                CUDA_CHECK(cudaMemset(dOut[w][o], 0xFF, outBytes[o]));
            }
        }
        CUDA_CHECK(cudaDeviceSynchronize());
        auto enqueueOn = [&](IPluginV3OneRuntime* r, cudaStream_t st, void* ws, int w) -> int32_t {
            if (r->onShapeChange(in.data(), nbIn, out.data(), nbOut) != 0)
            {
                return -1;
            }
            int32_t const e = r->enqueue(in.data(), out.data(), dIn.data(), dOut[w].data(), ws, st);
            return e != 0 ? e : (cudaStreamSynchronize(st) == cudaSuccess ? 0 : -2);
        };
        check(enqueueOn(rt, stream, workspace, kMAIN) == 0, tt + ": onShapeChange + enqueue return 0");
        check(enqueueOn(cloneRt, stream, workspace, kCLONE) == 0, tt + ": enqueue through the build-time clone");
        {
            check(rt->onShapeChange(in.data(), nbIn, out.data(), nbOut) == 0, tt + ": onShapeChange before capture");
            cudaGraph_t graph = nullptr;
            cudaGraphExec_t exec = nullptr;
            CUDA_CHECK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal));
            int32_t const e = rt->enqueue(in.data(), out.data(), dIn.data(), dOut[kGRAPH].data(), workspace, stream);
            cudaError_t const endErr = cudaStreamEndCapture(stream, &graph);
            bool ok = e == 0 && endErr == cudaSuccess && graph != nullptr
                && cudaGraphInstantiate(&exec, graph, 0) == cudaSuccess && cudaGraphLaunch(exec, stream) == cudaSuccess
                && cudaStreamSynchronize(stream) == cudaSuccess;
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
        }
        {
            int32_t ra = -9, rb = -9;
            std::thread ta([&] { ra = enqueueOn(rt, stream, workspace, kTHREAD_A); });
            std::thread tb([&] { rb = enqueueOn(rt2, stream2, workspace2, kTHREAD_B); });
            ta.join();
            tb.join();
            check(ra == 0 && rb == 0, tt + ": two execution contexts enqueue on two threads at once");
        }
        CUDA_CHECK(cudaGetLastError());
        std::vector<std::vector<uint8_t>> host(kWAYS);
        for (int32_t o = 0; o < nbOut; ++o)
        {
            for (int w = 0; w < kWAYS; ++w)
            {
                host[w].resize(outBytes[o]);
                CUDA_CHECK(cudaMemcpy(host[w].data(), dOut[w][o], outBytes[o], cudaMemcpyDeviceToHost));
            }
            size_t const es = elemSize(out[o].type);
            size_t unwritten = 0;
            for (size_t e = 0; e < host[kMAIN].size(); e += es)
            {
                bool allOnes = true;
                for (size_t b = 0; b < es; ++b)
                {
                    allOnes = allOnes && host[kMAIN][e + b] == 0xFF;
                }
                unwritten += allOnes;
            }
            check(unwritten == 0,
                tt + ": every element of " + op->outputs[o].name + " written (" + std::to_string(unwritten)
                    + " of " + std::to_string(host[kMAIN].size() / es) + " still poison)");
            for (int w = kCLONE; w < kWAYS; ++w)
            {
                check(host[w] == host[kMAIN],
                    tt + ": " + op->outputs[o].name + " from the " + wayName[w] + " has the same bits as the "
                        + wayName[kMAIN]);
            }
            std::string const path = a.dir + "/T" + std::to_string(t) + "." + op->outputs[o].name + ".out.bin";
            std::ofstream f(path, std::ios::binary);
            f.write(reinterpret_cast<char const*>(host[kMAIN].data()), static_cast<std::streamsize>(host[kMAIN].size()));
            check(static_cast<bool>(f), tt + ": wrote " + path);
        }
        for (void* p : dIn)
        {
            cudaFree(p);
        }
        for (auto& v : dOut)
        {
            for (void* p : v)
            {
                cudaFree(p);
            }
        }
    }
    cudaFree(workspace);
    cudaFree(workspace2);
    cudaStreamDestroy(stream);
    cudaStreamDestroy(stream2);
    delete buildClone;
    delete ctxPlugin2;
    delete ctxPlugin;
    delete engPlugin;
    return gFailures ? 1 : 0;
}

int usage()
{
    std::printf(
        "usage: mhc_plugin_harness LIB list|fields|logger\n"
        "       mhc_plugin_harness LIB registry --load dlopen|loadLibrary[,...]\n"
        "       mhc_plugin_harness LIB run --op OP --dtype DT --n N --d D --T t1,t2 --dir DIR [--attr k=v]...\n"
        "                                   [--string-fields] [--no-gpu] [--verbose]\n"
        "       (--attr name:int=V | name:float=V types a field as the ONNX parser would)\n");
    return 2;
}
} // namespace

int main(int argc, char** argv)
{
    if (argc < 3)
    {
        return usage();
    }
    std::string const mode = argv[2];
    RunArgs a;
    std::string loadSteps = "dlopen";
    for (int i = 3; i < argc; ++i)
    {
        std::string const k = argv[i];
        auto next = [&]() -> std::string { return i + 1 < argc ? argv[++i] : ""; };
        if (k == "--op")
        {
            a.op = next();
        }
        else if (k == "--dtype")
        {
            if (!parseDtype(next(), &a.dtype))
            {
                return usage();
            }
        }
        else if (k == "--n")
        {
            a.n = std::stoll(next());
        }
        else if (k == "--d")
        {
            a.d = std::stoll(next());
        }
        else if (k == "--T")
        {
            std::stringstream ss(next());
            std::string item;
            while (std::getline(ss, item, ','))
            {
                a.ts.push_back(std::stoll(item));
            }
        }
        else if (k == "--dir")
        {
            a.dir = next();
        }
        else if (k == "--attr")
        {
            std::string const kv = next();
            size_t const eq = kv.find('=');
            if (eq == std::string::npos)
            {
                return usage();
            }
            a.attrs.emplace_back(kv.substr(0, eq), kv.substr(eq + 1));
        }
        else if (k == "--string-fields")
        {
            a.stringFields = true;
        }
        else if (k == "--no-gpu")
        {
            a.gpu = false;
        }
        else if (k == "--load")
        {
            loadSteps = next();
        }
        else if (k == "--verbose")
        {
            gLogger.mVerbose = true;
        }
        else
        {
            return usage();
        }
    }
    std::printf("mhc_plugin_harness (TensorRT headers %d.%d.%d)\n", NV_TENSORRT_MAJOR, NV_TENSORRT_MINOR,
        NV_TENSORRT_PATCH);
    if (mode == "registry")
    {
        int const rc = modeRegistry(argv[1], loadSteps);
        std::printf("%s: %d check(s) failed\n", gFailures ? "FAILED" : "OK", gFailures);
        return rc;
    }
    Library lib;
    if (!loadLibrary(argv[1], &lib))
    {
        return 1;
    }
    int rc = 2;
    if (mode == "list")
    {
        rc = modeList(lib);
    }
    else if (mode == "fields")
    {
        rc = modeFields(lib);
    }
    else if (mode == "logger")
    {
        rc = modeLogger(lib);
    }
    else if (mode == "run")
    {
        rc = modeRun(lib, a);
    }
    else
    {
        return usage();
    }
    std::printf("%s: %d check(s) failed\n", gFailures ? "FAILED" : "OK", gFailures);
    return rc != 0 ? rc : (gFailures ? 1 : 0);
}
