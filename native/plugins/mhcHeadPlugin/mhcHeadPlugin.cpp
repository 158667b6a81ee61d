// MhcHead: residual [T,n,d] -> y [T,d] (contract: shared/spec/mhc_ops.md).
// Kernel call, plugin and creator.
#include "mhcPluginCommon.h"

#include <exception>
#include <string>

namespace mhc
{
namespace plugin
{
namespace
{
char const* const kNAME = "MhcHead";

std::vector<FieldSpec> const kFIELDS = {
    {"rms_eps", FieldKind::kFLOAT, FieldRule::kNON_NEGATIVE_FINITE, 1e-6},
    {"eps", FieldKind::kFLOAT, FieldRule::kNON_NEGATIVE_FINITE, 1e-6},
};

// Inputs: residual [T,n,d], hc_fn [n, n*d], hc_scale [1], hc_base [n]. Output: y [T,d].
constexpr int32_t kNB_IN = 4;
constexpr int32_t kNB_OUT = 1;

class MhcHeadPlugin final : public MhcPlugin<MhcHeadPlugin, kNB_IN, kNB_OUT, 0>
{
public:
    explicit MhcHeadPlugin(Fields const& fields)
        : MhcPlugin(kNAME, fields)
    {
        mParams.rms_eps = fields.getFloat("rms_eps");
        mParams.eps = fields.getFloat("eps");
    }

    int32_t getOutputDataTypes(nvinfer1::DataType* outputTypes, int32_t nbOutputs,
        nvinfer1::DataType const* inputTypes, int32_t nbInputs) const noexcept override
    {
        if (!checkCounts(nbInputs, nbOutputs, kNB_IN, kNB_OUT))
        {
            return -1;
        }
        if (!isResidualType(inputTypes[0]))
        {
            logError(std::string(kNAME) + ": residual must be float32, float16 or bfloat16, got "
                + dataTypeName(inputTypes[0]));
            return -1;
        }
        outputTypes[0] = inputTypes[0];
        return 0;
    }

    int32_t getOutputShapes(nvinfer1::DimsExprs const* inputs, int32_t nbInputs,
        nvinfer1::DimsExprs const* /*shapeInputs*/, int32_t /*nbShapeInputs*/, nvinfer1::DimsExprs* outputs,
        int32_t nbOutputs, nvinfer1::IExprBuilder& /*exprBuilder*/) noexcept override
    {
        if (!checkCounts(nbInputs, nbOutputs, kNB_IN, kNB_OUT))
        {
            return -1;
        }
        nvinfer1::DimsExprs const& res = inputs[0];
        if (res.nbDims != 3 || inputs[1].nbDims != 2 || inputs[2].nbDims != 1 || inputs[3].nbDims != 1)
        {
            logError(std::string(kNAME) + ": expected residual [T,n,d], hc_fn [n,K], hc_scale [1], hc_base [n]");
            return -1;
        }
        if (res.d[1]->isConstant() && res.d[2]->isConstant() && inputs[1].d[0]->isConstant()
            && inputs[1].d[1]->isConstant())
        {
            int64_t const n = res.d[1]->getConstantValue();
            int64_t const d = res.d[2]->getConstantValue();
            int64_t const m = inputs[1].d[0]->getConstantValue();
            int64_t const k = inputs[1].d[1]->getConstantValue();
            if (m != n || k != n * d)
            {
                logError(std::string(kNAME) + ": hc_fn is [" + std::to_string(m) + ", " + std::to_string(k)
                    + "], expected [n, n*d] = [" + std::to_string(n) + ", " + std::to_string(n * d)
                    + "] for residual n=" + std::to_string(n) + ", d=" + std::to_string(d));
                return -1;
            }
        }
        outputs[0].nbDims = 2;
        outputs[0].d[0] = res.d[0];
        outputs[0].d[1] = res.d[2];
        return 0;
    }

    bool supportsFormat(int32_t pos, nvinfer1::DynamicPluginTensorDesc const* inOut) const noexcept override
    {
        nvinfer1::PluginTensorDesc const& t = inOut[pos].desc;
        if (t.format != nvinfer1::TensorFormat::kLINEAR)
        {
            return false;
        }
        switch (pos)
        {
        case 0: return isResidualType(t.type);
        case 4: return t.type == inOut[0].desc.type; // y follows residual
        default: return t.type == nvinfer1::DataType::kFLOAT;
        }
    }

    size_t workspaceSize(int64_t t, int32_t n, int32_t d, mhcDtype_t dtype) const noexcept override
    {
        return mhcHeadWorkspaceSize(t, n, d, dtype);
    }

    int32_t launch(KernelCall const& c) noexcept override
    {
        mhcStatus_t const st = mhcHead(c.inputs[0], static_cast<float const*>(c.inputs[1]),
            static_cast<float const*>(c.inputs[2]), static_cast<float const*>(c.inputs[3]), c.outputs[0], c.t, c.n, c.d,
            c.dtype, &mParams, c.workspace, workspaceSize(c.t, c.n, c.d, c.dtype), c.stream);
        return st == MHC_STATUS_SUCCESS ? 0 : reportKernelFailure(kNAME, "mhcHead", st);
    }

private:
    int32_t checkStatic(nvinfer1::PluginTensorDesc const& res) const noexcept override
    {
        return checkResidualShape(kNAME, res);
    }

    mhcHeadParams mParams{};
};
} // namespace

nvinfer1::IPluginCreatorV3One* getMhcHeadCreator() noexcept
{
    static MhcCreator<MhcHeadPlugin> creator(kNAME, kFIELDS);
    return &creator;
}

} // namespace plugin
} // namespace mhc
