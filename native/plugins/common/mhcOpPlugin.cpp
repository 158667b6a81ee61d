#include "mhcOpPlugin.h"

#include <algorithm>
#include <cstring>
#include <utility>

namespace mhc
{
namespace plugin
{
namespace
{
using nvinfer1::DataType;
using nvinfer1::DimsExprs;

// The first port whose dims are `dims`; -1 if none.
int32_t findPort(std::vector<Port> const& ports, char const* dims)
{
    for (size_t i = 0; i < ports.size(); ++i)
    {
        if (std::strcmp(ports[i].dims, dims) == 0)
        {
            return static_cast<int32_t>(i);
        }
    }
    return -1;
}

// "[T,n,d]" for dims "Tnd".
std::string bracketed(char const* dims)
{
    std::string s = "[";
    for (char const* p = dims; *p; ++p)
    {
        s += (p == dims ? "" : ",") + std::string(1, *p);
    }
    return s + "]";
}

// How the spec writes a weight dimension: "(2+n)*n" for M, "n*d" for K.
std::string formula(char code)
{
    return code == 'M' ? "(2+n)*n" : code == 'K' ? "n*d" : std::string(1, code);
}

// The inputs' dims as far as they are known: -1 where not (a build-time
// expression that is not a constant, or an input not looked at).
using Shapes = std::vector<std::vector<int64_t>>;

// Every input unknown, at its port's rank.
Shapes unknownShapes(OpSpec const& op)
{
    Shapes s;
    for (Port const& p : op.inputs)
    {
        s.emplace_back(std::strlen(p.dims), int64_t{-1});
    }
    return s;
}

// Every input has its port's rank; logs the expected shapes otherwise.
bool ranksOk(OpSpec const& op, Shapes const& in)
{
    for (size_t i = 0; i < op.inputs.size(); ++i)
    {
        if (in[i].size() != std::strlen(op.inputs[i].dims))
        {
            std::string expected;
            for (Port const& p : op.inputs)
            {
                expected += (expected.empty() ? "" : ", ") + std::string(p.name) + " " + bracketed(p.dims);
            }
            logError(std::string(op.name) + ": expected " + expected);
            return false;
        }
    }
    return true;
}

// What n and d make a code: M = (2+n)*n, K = n*d, a digit itself; -1 while
// unknown, and for T, n and d, which only the inputs give.
int64_t derived(char code, int64_t n, int64_t d)
{
    if (code >= '0' && code <= '9')
    {
        return code - '0';
    }
    if (code == 'M' && n >= 0)
    {
        return (2 + n) * n;
    }
    return code == 'K' && n >= 0 && d >= 0 ? n * d : -1;
}

// T, n and d as the inputs give them: the value, and the input it came from.
struct Letters
{
    static constexpr char kCodes[] = "Tnd";
    int64_t value[3] = {-1, -1, -1};
    size_t from[3] = {0, 0, 0};
};

// T, n and d have one value across the inputs. The fixed input is read first, so
// a message names the other input as the odd one. Logs the first disagreement.
bool lettersAgree(OpSpec const& op, Shapes const& in, size_t fixed, Letters* out)
{
    Letters& l = *out;
    for (size_t j = 0; j < in.size(); ++j)
    {
        size_t const i = j == 0 ? fixed : j <= fixed ? j - 1 : j; // fixed, then the others in order
        for (size_t k = 0; k < in[i].size(); ++k)
        {
            char const* letter = std::strchr(Letters::kCodes, op.inputs[i].dims[k]);
            if (in[i][k] < 0 || !letter)
            {
                continue;
            }
            size_t const c = static_cast<size_t>(letter - Letters::kCodes);
            if (l.value[c] < 0)
            {
                l.value[c] = in[i][k];
                l.from[c] = i;
            }
            else if (in[i][k] != l.value[c])
            {
                Port const& a = op.inputs[i];
                Port const& b = op.inputs[l.from[c]];
                logError(std::string(op.name) + ": " + a.name + " " + bracketed(a.dims) + " has " + *letter + "="
                    + std::to_string(in[i][k]) + " but " + b.name + " " + bracketed(b.dims) + " has " + *letter
                    + "=" + std::to_string(l.value[c]));
                return false;
            }
        }
    }
    return true;
}

// M, K and digits are what n and d make them. Logs the first that is not.
bool derivedAgree(OpSpec const& op, Shapes const& in, Letters const& l)
{
    int64_t const n = l.value[1];
    int64_t const d = l.value[2];
    for (size_t i = 0; i < in.size(); ++i)
    {
        for (size_t k = 0; k < in[i].size(); ++k)
        {
            char const code = op.inputs[i].dims[k];
            int64_t const want = derived(code, n, d);
            if (in[i][k] >= 0 && want >= 0 && in[i][k] != want)
            {
                std::string const how = code == 'M' || code == 'K' ? formula(code) + " = " : "";
                std::string const nd = code == 'M' || code == 'K'
                    ? " for n=" + std::to_string(n) + (code == 'K' ? ", d=" + std::to_string(d) : "")
                    : "";
                logError(std::string(op.name) + ": " + op.inputs[i].name + " " + bracketed(op.inputs[i].dims) + ": dim "
                    + std::to_string(k) + " is " + std::to_string(in[i][k]) + ", expected " + how + std::to_string(want)
                    + nd);
                return false;
            }
        }
    }
    return true;
}

// The one shape rule of the spec's tables, for inputs of the ports' ranks: every
// dimension code has one value across the inputs (M, K and digits the values n
// and d give them). Checked wherever values are known, so a mismatch is refused
// before a kernel reads out of bounds.
bool dimsAgree(OpSpec const& op, Shapes const& in, size_t fixed)
{
    Letters letters;
    return lettersAgree(op, in, fixed, &letters) && derivedAgree(op, in, letters);
}

// The constant dims of build-time expressions (-1 where not constant).
Shapes constants(DimsExprs const* in, size_t count)
{
    Shapes s(count);
    for (size_t i = 0; i < count; ++i)
    {
        for (int32_t k = 0; k < in[i].nbDims; ++k)
        {
            s[i].push_back(in[i].d[k]->isConstant() ? in[i].d[k]->getConstantValue() : -1);
        }
    }
    return s;
}

} // namespace

// ---- ops without fields --------------------------------------------------------

std::vector<FieldSpec> const& noFields()
{
    static std::vector<FieldSpec> const fields;
    return fields;
}

NoParams noParams(Fields const& /*fields*/)
{
    return {};
}

// ---- MhcPluginBase: identity, types, shapes, formats ---------------------------

MhcPluginBase::MhcPluginBase(OpSpec const& op, Fields const& fields)
    : MhcIdentity(op.name)
    , mOp(&op)
    , mFields(fields)
    , mFixed(std::max(findPort(op.inputs, "Tnd"), 0))
{
}

nvinfer1::IPluginCapability* MhcPluginBase::getCapabilityInterface(nvinfer1::PluginCapabilityType type) noexcept
{
    switch (type)
    {
    case nvinfer1::PluginCapabilityType::kCORE: return static_cast<nvinfer1::IPluginV3OneCore*>(this);
    case nvinfer1::PluginCapabilityType::kBUILD: return static_cast<nvinfer1::IPluginV3OneBuild*>(this);
    case nvinfer1::PluginCapabilityType::kRUNTIME: return static_cast<nvinfer1::IPluginV3OneRuntime*>(this);
    }
    return nullptr;
}

int32_t MhcPluginBase::getNbOutputs() const noexcept
{
    return static_cast<int32_t>(mOp->outputs.size());
}

Port const& MhcPluginBase::port(int32_t pos) const noexcept
{
    int32_t const nbIn = static_cast<int32_t>(mOp->inputs.size());
    return pos < nbIn ? mOp->inputs[pos] : mOp->outputs[pos - nbIn];
}

bool MhcPluginBase::checkCounts(int32_t nbInputs, int32_t nbOutputs) const noexcept
{
    int32_t const wantIn = static_cast<int32_t>(mOp->inputs.size());
    if (nbInputs == wantIn && nbOutputs == getNbOutputs())
    {
        return true;
    }
    logError(std::string(mPluginName) + ": expected " + std::to_string(wantIn) + " inputs and "
        + std::to_string(getNbOutputs()) + " outputs, got " + std::to_string(nbInputs) + " and "
        + std::to_string(nbOutputs));
    return false;
}

// Input 0 decides: float32 where its port says so (MhcSinkhorn's logits), else a
// residual dtype, which the kSAME_DTYPE input (x's residual), if any, shares.
bool MhcPluginBase::checkInputTypes(DataType const* types) const noexcept
{
    std::vector<Port> const& in = mOp->inputs;
    auto const same = std::find_if(in.begin(), in.end(), [](Port const& p) { return p.type == kSAME_DTYPE; });
    std::string problem;
    if (in[0].type == kFLOAT32)
    {
        problem = types[0] == DataType::kFLOAT ? "" : std::string(" must be float32, got ") + dataTypeName(types[0]);
    }
    else if (same == in.end())
    {
        problem = isResidualType(types[0])
            ? ""
            : std::string(" must be float32, float16 or bfloat16, got ") + dataTypeName(types[0]);
    }
    else if (!isResidualType(types[0]) || types[same - in.begin()] != types[0])
    {
        problem = std::string(" and ") + same->name + " must share one of float32, float16, bfloat16, got "
            + dataTypeName(types[0]) + " and " + dataTypeName(types[same - in.begin()]);
    }
    if (!problem.empty())
    {
        logError(std::string(mPluginName) + ": " + in[0].name + problem);
    }
    return problem.empty();
}

int32_t MhcPluginBase::getOutputDataTypes(
    DataType* outputTypes, int32_t nbOutputs, DataType const* inputTypes, int32_t nbInputs) const noexcept
{
    if (!checkCounts(nbInputs, nbOutputs) || !checkInputTypes(inputTypes))
    {
        return -1;
    }
    for (int32_t i = 0; i < nbOutputs; ++i)
    {
        outputTypes[i] = mOp->outputs[i].type == kSAME_DTYPE ? inputTypes[0] : DataType::kFLOAT;
    }
    return 0;
}

bool MhcPluginBase::checkShapes(DimsExprs const* in) const noexcept
{
    try
    {
        Shapes const shapes = constants(in, mOp->inputs.size());
        return ranksOk(*mOp, shapes) && dimsAgree(*mOp, shapes, mFixed);
    }
    catch (std::exception const& e)
    {
        logError(std::string(mPluginName) + ": shape check: " + e.what());
        return false;
    }
}

int32_t MhcPluginBase::getOutputShapes(DimsExprs const* inputs, int32_t nbInputs, DimsExprs const* /*shapeInputs*/,
    int32_t /*nbShapeInputs*/, DimsExprs* outputs, int32_t nbOutputs, nvinfer1::IExprBuilder& /*exprBuilder*/) noexcept
{
    if (!checkCounts(nbInputs, nbOutputs) || !checkShapes(inputs))
    {
        return -1;
    }
    for (int32_t i = 0; i < nbOutputs; ++i)
    {
        char const* dims = mOp->outputs[i].dims;
        outputs[i].nbDims = static_cast<int32_t>(std::strlen(dims));
        for (int32_t k = 0; k < outputs[i].nbDims; ++k)
        {
            outputs[i].d[k] = dimExpr(dims[k], inputs);
        }
    }
    return 0;
}

// The fixed input's dimension of `code` (n and d are fixed there), else the first
// input's that has it; the ports make every output code one of an input's.
nvinfer1::IDimensionExpr const* MhcPluginBase::dimExpr(char code, DimsExprs const* inputs) const noexcept
{
    char const* fixed = mOp->inputs[mFixed].dims;
    if (char const* at = std::strchr(fixed, code))
    {
        return inputs[mFixed].d[at - fixed];
    }
    for (size_t i = 0; i < mOp->inputs.size(); ++i)
    {
        if (char const* at = std::strchr(mOp->inputs[i].dims, code))
        {
            return inputs[i].d[at - mOp->inputs[i].dims];
        }
    }
    return nullptr;
}

bool MhcPluginBase::supportsFormatCombination(
    int32_t pos, nvinfer1::DynamicPluginTensorDesc const* inOut, int32_t nbInputs, int32_t nbOutputs) noexcept
{
    if (nbInputs != static_cast<int32_t>(mOp->inputs.size()) || nbOutputs != getNbOutputs() || pos < 0
        || pos >= nbInputs + nbOutputs)
    {
        return false;
    }
    nvinfer1::PluginTensorDesc const& t = inOut[pos].desc;
    if (t.format != nvinfer1::TensorFormat::kLINEAR)
    {
        return false;
    }
    switch (port(pos).type)
    {
    case kRESIDUAL_DTYPE: return isResidualType(t.type);
    case kSAME_DTYPE: return t.type == inOut[0].desc.type;
    default: return t.type == DataType::kFLOAT;
    }
}

// ---- MhcPluginBase: configure, workspace, enqueue, runtime ---------------------

// The fixed input alone (configure: at the profile's max): every dim but T fixed,
// its codes agreeing (MhcSinkhorn's logits square), and n and d ones the kernels take.
int32_t MhcPluginBase::checkFixed(nvinfer1::PluginTensorDesc const& desc) const noexcept
{
    try
    {
        Port const& p = mOp->inputs[mFixed];
        Shapes shapes = unknownShapes(*mOp);
        bool fixed = desc.dims.nbDims == static_cast<int32_t>(shapes[mFixed].size());
        for (int32_t k = 1; fixed && k < desc.dims.nbDims; ++k)
        {
            fixed = desc.dims.d[k] > 0;
        }
        if (!fixed)
        {
            logError(std::string(mPluginName) + ": " + p.name + " must be " + bracketed(p.dims)
                + " with every dim but T fixed per engine");
            return -1;
        }
        shapes[mFixed].assign(desc.dims.d, desc.dims.d + desc.dims.nbDims);
        if (!dimsAgree(*mOp, shapes, mFixed))
        {
            return -1;
        }
        char const* n = std::strchr(p.dims, 'n');
        char const* d = std::strchr(p.dims, 'd');
        // An op without d (MhcSinkhorn) passes a d the kernels take: only its n is checked.
        mhcStatus_t const st = mhcCheckShape(1, static_cast<int32_t>(desc.dims.d[n - p.dims]),
            d ? static_cast<int32_t>(desc.dims.d[d - p.dims]) : MHC_D_ALIGN, toMhcDtype(desc.type));
        return st == MHC_STATUS_SUCCESS ? 0 : reportKernelFailure(mPluginName, "mhcCheckShape", st);
    }
    catch (std::exception const& e)
    {
        logError(std::string(mPluginName) + ": shape check: " + e.what());
        return -1;
    }
}

// Every input at enqueue time: the ports' ranks and one value per code, T included.
bool MhcPluginBase::checkAll(nvinfer1::PluginTensorDesc const* in) const noexcept
{
    try
    {
        Shapes shapes(mOp->inputs.size());
        for (size_t i = 0; i < shapes.size(); ++i)
        {
            shapes[i].assign(in[i].dims.d, in[i].dims.d + std::max(in[i].dims.nbDims, 0));
        }
        return ranksOk(*mOp, shapes) && dimsAgree(*mOp, shapes, mFixed);
    }
    catch (std::exception const& e)
    {
        logError(std::string(mPluginName) + ": shape check: " + e.what());
        return false;
    }
}

int32_t MhcPluginBase::configurePlugin(nvinfer1::DynamicPluginTensorDesc const* in, int32_t nbInputs,
    nvinfer1::DynamicPluginTensorDesc const* /*out*/, int32_t nbOutputs) noexcept
{
    // desc.dims may hold -1 here (network time); the profile's min/max are concrete.
    nvinfer1::PluginTensorDesc atMax{};
    return checkCounts(nbInputs, nbOutputs) && profileDesc(mPluginName, in[mFixed], &atMax) ? checkFixed(atMax) : -1;
}

int32_t MhcPluginBase::onShapeChange(nvinfer1::PluginTensorDesc const* in, int32_t nbInputs,
    nvinfer1::PluginTensorDesc const* /*out*/, int32_t nbOutputs) noexcept
{
    return checkCounts(nbInputs, nbOutputs) && checkFixed(in[mFixed]) == 0 && checkAll(in) ? 0 : -1;
}

size_t MhcPluginBase::getWorkspaceSize(nvinfer1::DynamicPluginTensorDesc const* inputs, int32_t nbInputs,
    nvinfer1::DynamicPluginTensorDesc const* /*outputs*/, int32_t /*nbOutputs*/) const noexcept
{
    if (nbInputs != static_cast<int32_t>(mOp->inputs.size()) || inputs[mFixed].max.nbDims != 3 || !mOp->workspace)
    {
        return 0;
    }
    // Sized at the profile's max T: the kernel's bound holds for any smaller T.
    nvinfer1::Dims const& mx = inputs[mFixed].max;
    return mOp->workspace(mx.d[0], static_cast<int32_t>(mx.d[1]), static_cast<int32_t>(mx.d[2]),
        toMhcDtype(inputs[mFixed].desc.type));
}

int32_t MhcPluginBase::enqueue(nvinfer1::PluginTensorDesc const* inputDesc,
    nvinfer1::PluginTensorDesc const* /*outputDesc*/, void const* const* inputs, void* const* outputs, void* workspace,
    cudaStream_t stream) noexcept
{
    nvinfer1::Dims const& dims = inputDesc[mFixed].dims;
    if (dims.d[0] == 0)
    {
        return 0; // T = 0 is a valid call that does nothing
    }
    KernelCall call{dims.d[0], static_cast<int32_t>(dims.d[1]), static_cast<int32_t>(dims.d[2]),
        toMhcDtype(inputDesc[mFixed].type), inputs, outputs, workspace, 0, stream};
    call.workspaceSize = mOp->workspace ? mOp->workspace(call.t, call.n, call.d, call.dtype) : 0;
    mhcStatus_t const st = launch(call);
    return st == MHC_STATUS_SUCCESS ? 0 : reportKernelFailure(mPluginName, mOp->kernel, st);
}

nvinfer1::IPluginV3* MhcPluginBase::attachToContext(nvinfer1::IPluginResourceContext* /*context*/) noexcept
{
    return clone();
}

nvinfer1::PluginFieldCollection const* MhcPluginBase::getFieldsToSerialize() noexcept
{
    try
    {
        return mFields.serialize();
    }
    catch (std::exception const& e)
    {
        logError(std::string(mPluginName) + ": getFieldsToSerialize: " + e.what());
        return nullptr;
    }
}

// ---- MhcCreatorBase ---------------------------------------------------------------

MhcCreatorBase::MhcCreatorBase(OpSpec op)
    : MhcIdentity(op.name)
    , mOp(std::move(op))
    , mNames(mOp.fields)
{
}

nvinfer1::IPluginV3* MhcCreatorBase::createPlugin(
    char const* name, nvinfer1::PluginFieldCollection const* fc, nvinfer1::TensorRTPhase phase) noexcept
{
    try
    {
        Fields fields(&mOp.fields);
        std::string error;
        if (!fields.parse(mPluginName, fc, &error))
        {
            logError(error + (phase == nvinfer1::TensorRTPhase::kRUNTIME ? " (runtime phase, serialized fields)" : "")
                + (name ? std::string(" [layer ") + name + "]" : std::string()));
            return nullptr;
        }
        return make(fields);
    }
    catch (std::exception const& e)
    {
        logError(std::string(mPluginName) + ": createPlugin: " + e.what());
    }
    catch (...)
    {
        logError(std::string(mPluginName) + ": createPlugin: unknown exception");
    }
    return nullptr;
}

} // namespace plugin
} // namespace mhc
